# PyTorch reference of `perp retrain` for any family, built on transformers' own model (not a replica): the pruned
# folder loaded by transformers, perp's initial trainable tensors and masks (retrain-dump.mts) put in place, every
# pruned linear's forward replaced by its adapter's (MaskLoRA W + s·(BA ⊙ M), ScaleLoRA W ⊙ BA, LoRA / LoRA-prune
# W + s·BA while training), AdamW 0.9/0.999 eps 1e-8 wd 0, linear schedule with 10% warmup, the same batches; the
# per-step losses are compared with perp's log. GPT-2's Conv1D weights (in, out) are used transposed. Dev check only:
#   node --import tsx scripts/xcheck/retrain-dump.mts <pruned dir> <work> norm,bias,lora mask_lora
#   python scripts/xcheck/retrain_hf_ref.py <pruned dir> <work> mask_lora
import json, math, sys
import torch
import torch.nn.functional as F
import transformers as tf
from safetensors.torch import load_file

MODEL, WORK = sys.argv[1], sys.argv[2]
LT = sys.argv[3] if len(sys.argv) > 3 else "mask_lora"
VERBOSE = len(sys.argv) > 4
torch.manual_seed(0)
torch.set_num_threads(2)
D = load_file(WORK + "/init.safetensors")
model = tf.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
model.requires_grad_(False)
train = {k[5:]: v.clone().requires_grad_(True) for k, v in D.items() if k.startswith("init.")}
masks = {k[5:]: v for k, v in D.items() if k.startswith("mask.")}
ids_all = D["ids"].long()
steps, T = ids_all.shape
s = 32 / 16
mods = dict(model.named_modules())
params = dict(model.named_parameters())
# Trainable tensors that are plain parameters of the model (norms, biases that exist, a head): use perp's initial
# values in their place; biases perp created (the family had none) are added in the patched forwards below.
for n, t in train.items():
    if ".lora_" in n:
        continue
    mod_name, attr = n.rsplit(".", 1)
    m = mods.get(mod_name)
    if n in ("lm_head.weight", "embed_out.weight"):  # the head (transformers 5 calls NeoX's embed_out lm_head)
        m = model.get_output_embeddings()
    setattr(m, attr, torch.nn.Parameter(t, requires_grad=True))
    train[n] = getattr(m, attr)


# A tied head (not untied by the head subset) must follow the trained embedding.
if getattr(model.config, "tie_word_embeddings", False) and not {"lm_head.weight", "embed_out.weight"} & set(train):
    model.get_output_embeddings().weight = model.get_input_embeddings().weight


def patch(name, m):
    conv = type(m).__name__ == "Conv1D"
    def fwd(x):
        w = m.weight.t() if conv else m.weight
        if name + ".lora_A" in train:
            A, B = train[name + ".lora_A"], train[name + ".lora_B"]
            M = masks[name].t() if conv else masks[name]
            if LT == "mask_lora": w = w + s * ((B @ A) * M)
            elif LT == "scale_lora": w = w * (B @ A)
            else: w = w + s * (B @ A)
        b = train.get(name + ".bias", m.bias)
        return F.linear(x, w, b)
    m.forward = fwd


if "NOPAD" in __import__("os").environ:
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding): m.padding_idx = None
for name in masks:
    patch(name, mods[name])
opt = torch.optim.AdamW(list(train.values()), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
warm = math.ceil(steps * 0.1)  # transformers Trainer.get_warmup_steps
def lr_at(k): return 5e-4 * k / max(1, warm) if k < warm else 5e-4 * max(0, (steps - k) / max(1, steps - warm))
perp = [json.loads(l)["loss"] for l in open(WORK + "/run/log.jsonl")]
print("trainable:", len(train), "tensors,", sum(v.numel() for v in train.values()), "params")
worst = 0.0
for k in range(steps):
    ids = ids_all[k : k + 1]
    loss = model(ids, labels=ids).loss
    opt.zero_grad(); loss.backward()
    for g in opt.param_groups: g["lr"] = lr_at(k)
    opt.step()
    with torch.no_grad():  # full: pruned weights stay exactly 0
        for n, msk in masks.items():
            if n + ".weight" in train: train[n + ".weight"].mul_(msk)
    worst = max(worst, abs(loss.item() - perp[k]) / abs(perp[k]))
    if VERBOSE: print(k + 1, f"{abs(loss.item() - perp[k]) / abs(perp[k]):.2e}")
    if k < 2 or k >= steps - 2: print(f"step {k + 1}: transformers {loss.item():.6f} perp {perp[k]:.6f}")
print(f"max relative difference over {steps} steps: {worst:.2e}")
