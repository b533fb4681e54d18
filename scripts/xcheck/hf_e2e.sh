#!/usr/bin/env bash
# End-to-end cross-check of every family against transformers (dev machine only, never CI): tiny random GPT-2, OPT,
# NeoX, Mistral (with and without a window), Qwen2, Qwen3 (with a window on its second block), Phi-3 (a window, half
# of each head rotated), Phi (with qk_layernorm), Gemma and Gemma 3 (windowed and full blocks) built by transformers
# with tokenizers from tok_ref.py; perp prunes them (SparseGPT 2:4), retrains (norm + bias + MaskLoRA / ScaleLoRA /
# LoRA-prune; Mistral with a window, Qwen3, Phi-3 and Gemma, where 'bias' is refused: norm + LoRA) and reconstructs; transformers then loads every output folder and its logits are compared with perp's; the
# WikiText-2 perplexity of each MaskLoRA model is computed by both (HF protocol).
#   PY=/tmp/tfenv/bin/python bash scripts/xcheck/hf_e2e.sh /tmp/xc-e2e     (from the repo root, after `npm run build`)
set -euo pipefail
PY=${PY:-python3}; W=${1:?work dir}; X=scripts/xcheck
$PY $X/tok_ref.py $W/tok > /dev/null
$PY $X/hf_e2e.py models $W
for f in ${FAMILIES:-gpt2 opt neox mistral mistral_nowin qwen2 qwen3_win phi3_win phi gemma gemma3_win}; do
  node bin/perp.js prune --model $W/$f --method sparsegpt --pattern 2:4 --calib-samples 8 --calib-seqlen 64 --out $W/out/$f-w > /dev/null
  p=norm,bias,lora; case $f in mistral | qwen3_win | phi3_win | gemma*) p=norm,lora ;; esac
  for lt in mask_lora scale_lora lora_prune; do
    node bin/perp.js retrain --model $W/out/$f-w --params $p --lora-type $lt --lora-r 4 --steps 6 --seqlen 64 --out $W/out/$f-r-$lt > /dev/null
  done
  node bin/perp.js retrain --model $W/out/$f-w --mode reconstruct --params norm,lora --steps 3 --seqlen 64 --calib-samples 4 --out $W/out/$f-rc > /dev/null
  node bin/perp.js eval --model $W/out/$f-r-mask_lora --ppl wikitext2 --max-tokens 20000 --json 2>/dev/null | tail -1 > $W/out/$f-r-mask_lora.ppl.json
done
$PY $X/hf_e2e.py refs $W
node --import tsx $X/hf-logits.mts $W/out
