# Helper of hf_e2e.sh. `models W`: tiny random models of every family, built by transformers, with tokenizers from
# tok_ref.py. `refs W`: transformers' logits of every perp output folder (ref.json, compared by hf-logits.mts) and
# the WikiText-2 perplexity of the MaskLoRA ones by the HF protocol, next to perp's.
import json, math, os, shutil, sys
import torch
import transformers as tf
from tokenizers import Tokenizer

mode, W = sys.argv[1], sys.argv[2]
V = 2001
if mode == "models":
    torch.manual_seed(0)
    cases = {
        "gpt2": (tf.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=128), "bytelevel"),
        "opt": (tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64), "opt"),
        "neox": (tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128), "bytelevel"),
        "mistral": (tf.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=32, max_position_embeddings=128), "spbpe"),
        "mistral_nowin": (tf.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=None, max_position_embeddings=128), "spbpe"),
        "qwen2": (tf.Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True), "bytelevel"),
        "phi3_win": (tf.Phi3Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, original_max_position_embeddings=128, sliding_window=48, partial_rotary_factor=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2), "spbpe"),
        "gemma": (tf.GemmaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2), "spbpe"),
        "gemma3_win": (tf.Gemma3TextConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128, sliding_window=40, sliding_window_pattern=2, query_pre_attn_scalar=16, pad_token_id=0, bos_token_id=1, eos_token_id=2), "spbpe"),
        "phi": (tf.PhiConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, partial_rotary_factor=0.5, qk_layernorm=True), "bytelevel"),
        "qwen3_win": (tf.Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128, use_sliding_window=True, sliding_window=32, max_window_layers=1), "bytelevel"),
    }
    for name, (cfg, tok) in cases.items():
        d = os.path.join(W, name)
        tf.AutoModelForCausalLM.from_config(cfg).float().save_pretrained(d, safe_serialization=True)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(W, "tok", tok, f), d)
else:
    raw = open(os.path.join(os.environ.get("PERP_DATA", "../shared/data"), "datasets/wikitext-2-raw-v1/test.txt"), encoding="utf8").read()
    out = os.path.join(W, "out")
    for name in sorted(os.listdir(out)):
        d = os.path.join(out, name)
        if not os.path.isdir(d):
            continue
        m = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        ids = torch.randint(0, V - 10, (1, 64), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            logits = m(ids).logits[0]
            gen = m.generate(ids[:, :8], max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
        json.dump({"ids": ids[0].tolist(), "logits": logits.tolist(), "gen_prompt": ids[0, :8].tolist(), "gen": gen[0, 8:].tolist()}, open(os.path.join(d, "ref.json"), "w"))
        if name.endswith("-r-mask_lora"):
            toks = torch.tensor(Tokenizer.from_file(os.path.join(d, "tokenizer.json")).encode(raw).ids[:20000])
            nll, n, L = 0.0, 0, 128
            with torch.no_grad():
                for i in range(toks.numel() // L):
                    x = toks[i * L:(i + 1) * L].unsqueeze(0)
                    nll += m(x, labels=x).loss.item() * (L - 1); n += L - 1
            ours = json.load(open(d + ".ppl.json"))["perplexity"]["wikitext2"]
            print(f"{name:26s} WikiText-2 ppl (20K tokens): transformers {math.exp(nll / n):.6f}  perp {ours:.6f}")
