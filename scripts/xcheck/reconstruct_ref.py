# PyTorch reference of `perp retrain --mode reconstruct --params norm` on a LLaMA-family model, following PERP's
# prune_methods.py (ZIB-IOL/PERP) with transformers' own decoder layers: calibration windows drawn as get_c4 draws
# them (random.seed(seed), randint) from the shipped C4 documents; one activation stream: block i's targets are the
# dense block i on the current inputs, initial MSE of the pruned block, `steps` AdamW steps on the block's norm
# weights (0.9/0.999, eps 1e-8, wd 0; linear schedule, int(0.1 · steps) warmup; batches in order from the first
# window), final MSE, then the pruned block's outputs feed the next. Prints per-block MSEs as JSON. Dev check only:
#   python scripts/xcheck/reconstruct_ref.py <dense dir> <pruned dir> <c4 parquet> <samples> <seqlen> <steps> <lr>
import json, random, sys
import pyarrow.parquet as pq
import torch
import transformers as tf
from transformers.optimization import get_linear_schedule_with_warmup

DENSE, PRUNED, C4 = sys.argv[1], sys.argv[2], sys.argv[3]
N, L, STEPS, LR = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
torch.set_num_threads(2)
tok = tf.AutoTokenizer.from_pretrained(DENSE)
texts = pq.read_table(C4).column("text").to_pylist()
random.seed(0)
wins = []
for _ in range(N):
    while True:
        i = random.randint(0, len(texts) - 1)
        enc = tok(texts[i], return_tensors="pt").input_ids
        if enc.shape[1] > L:
            break
    s = random.randint(0, enc.shape[1] - L - 1)
    wins.append(enc[0, s : s + L])
ids = torch.stack(wins)
load = lambda d: tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
dense, pruned = load(DENSE), load(PRUNED)
pos = torch.arange(L)[None]
causal = torch.full((L, L), float("-inf")).triu(1)[None, None]


def block(model, i, x):
    rot = model.model.rotary_emb(x, pos.expand(x.shape[0], -1))
    out = model.model.layers[i](x, attention_mask=causal.expand(x.shape[0], 1, L, L), position_ids=pos,
                                position_embeddings=rot)
    return out[0] if isinstance(out, tuple) else out


mse = torch.nn.MSELoss(reduction="mean")
with torch.no_grad():
    inps = pruned.model.embed_tokens(ids)
res = []
for i in range(len(pruned.model.layers)):
    layer = pruned.model.layers[i]
    with torch.no_grad():
        outs = torch.cat([block(dense, i, inps[j : j + 1]) for j in range(N)])
        before = sum(mse(block(pruned, i, inps[j : j + 1]), outs[j : j + 1]).item() for j in range(N)) / N
    norms = [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
    for p in norms:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(norms, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * STEPS), STEPS)
    for step in range(STEPS):
        j = step % N
        loss = mse(block(pruned, i, inps[j : j + 1]), outs[j : j + 1])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    for p in norms:
        p.requires_grad_(False)
    with torch.no_grad():
        nxt = torch.cat([block(pruned, i, inps[j : j + 1]) for j in range(N)])
        after = sum(mse(nxt[j : j + 1], outs[j : j + 1]).item() for j in range(N)) / N
    res.append({"block": i, "mse_before": before, "mse_after": after})
    inps = nxt
print(json.dumps(res))
