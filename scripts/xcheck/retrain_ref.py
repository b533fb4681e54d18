# Independent PyTorch replica of: perp retrain --params norm,lora --lora-type mask_lora --lora-r 16 --lora-alpha 32
# and the other subsets (AdamW 0.9/0.999 eps 1e-8 wd 0, linear schedule with 10% warmup, full: masks re-applied after
# each step, head on a tied model: an untied copy), same init and batches as retrain-dump.mts wrote. LLaMA only.
import sys, json, math, struct, numpy as np, torch
def load(path):
    b = open(path,'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8+n]); base = 8+n; out = {}
    for k,v in h.items():
        if k == '__metadata__': continue
        s,e = v['data_offsets']; assert v['dtype']=='F32'
        out[k] = np.frombuffer(b[base+s:base+e], dtype=np.float32).reshape(v['shape']).copy()
    return out

MODEL, WORK = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
cfg = json.load(open(MODEL + '/config.json'))
W = {k: torch.tensor(v) for k, v in load(MODEL + '/model.safetensors').items()}
D = load(WORK + '/init.safetensors')
L, H, KV, C = cfg['num_hidden_layers'], cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['hidden_size']
hd = C // H; eps = cfg['rms_norm_eps']; s = 32 / 16
LT = sys.argv[3] if len(sys.argv) > 3 else 'mask_lora'
train = {k[5:]: torch.tensor(v, requires_grad=True) for k, v in D.items() if k.startswith('init.')}
masks = {k[5:]: torch.tensor(v) for k, v in D.items() if k.startswith('mask.')}
ids_all = torch.tensor(D['ids']).long()
steps, T = ids_all.shape
def P(n): return train[n] if n in train else W[n]
print('trainable:', len(train), 'tensors,', sum(v.numel() for v in train.values()), 'params')
def rms(x, w): return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
inv = 1.0 / (cfg.get('rope_theta', 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
t = torch.arange(T).float(); fr = torch.outer(t, inv); emb = torch.cat([fr, fr], -1); cos, sin = emb.cos(), emb.sin()
def rot(x): return torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)
def lin(x, name):
    w = train.get(name + '.weight', W[name + '.weight'])
    y = None
    if name + '.lora_A' in train:
        A, B = train[name + '.lora_A'], train[name + '.lora_B']
        if LT == 'mask_lora': w = w + s * ((B @ A) * masks[name])
        elif LT == 'scale_lora': w = w * (B @ A)
        else: w = w + s * (B @ A)   # lora, lora_prune train W + s·BA
    y = x @ w.t()
    if name + '.bias' in train: y = y + train[name + '.bias']
    return y
def forward(ids):
    x = P('model.embed_tokens.weight')[ids]
    for l in range(L):
        p = f'model.layers.{l}.'
        h = rms(x, P(p + 'input_layernorm.weight'))
        q = lin(h, p + 'self_attn.q_proj').view(T, H, hd).transpose(0, 1)
        k = lin(h, p + 'self_attn.k_proj').view(T, KV, hd).transpose(0, 1)
        v = lin(h, p + 'self_attn.v_proj').view(T, KV, hd).transpose(0, 1)
        q = q * cos + rot(q) * sin; k = k * cos + rot(k) * sin
        k = k.repeat_interleave(H // KV, 0); v = v.repeat_interleave(H // KV, 0)
        a = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        a = a.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float('-inf')).softmax(-1)
        o = (a @ v).transpose(0, 1).reshape(T, C)
        x = x + lin(o, p + 'self_attn.o_proj')
        h = rms(x, P(p + 'post_attention_layernorm.weight'))
        x = x + lin(torch.nn.functional.silu(lin(h, p + 'mlp.gate_proj')) * lin(h, p + 'mlp.up_proj'), p + 'mlp.down_proj')
    x = rms(x, P('model.norm.weight'))
    return x @ (train['lm_head.weight'] if 'lm_head.weight' in train else P('model.embed_tokens.weight')).t()
opt = torch.optim.AdamW(list(train.values()), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
warm = math.floor(steps * 0.1)
def lr_at(k): return 5e-4 * k / max(1, warm) if k < warm else 5e-4 * max(0, (steps - k) / max(1, steps - warm))
perp = [json.loads(l)['loss'] for l in open(WORK + '/run/log.jsonl')]
worst = 0
for k in range(steps):
    ids = ids_all[k]
    tg = torch.cat([ids[1:], torch.tensor([-100])])
    loss = torch.nn.functional.cross_entropy(forward(ids), tg, ignore_index=-100)
    opt.zero_grad(); loss.backward()
    for g in opt.param_groups: g['lr'] = lr_at(k)
    opt.step()
    with torch.no_grad():  # full: pruned weights stay exactly 0
        for n, m in masks.items():
            if n + '.weight' in train: train[n + '.weight'].mul_(m)
    worst = max(worst, abs(loss.item() - perp[k]) / abs(perp[k]))
    if k < 3 or k >= steps - 3: print(f"step {k+1}: torch {loss.item():.6f} perp {perp[k]:.6f}")
print(f"max relative difference over {steps} steps: {worst:.2e}")
