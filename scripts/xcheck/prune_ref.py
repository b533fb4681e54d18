# Reference Wanda and SparseGPT (the algorithms of locuslab/wanda lib/prune.py prune_wanda + WrappedGPT, and
# IST-DASLab/sparsegpt llama_sequential + SparseGPT.add_batch/fasterprune, rewritten here in plain PyTorch) on the
# calibration windows perp drew (prune-dump.mts), compared with perp's pruned folders. Dev check, never CI.
# Block i is calibrated on the outputs of the already-pruned blocks < i: here by running the whole model with the
# earlier blocks pruned and hooks on block i's linears (the same inputs as the references' per-layer loop).
#   python scripts/xcheck/prune_ref.py <model dir> <work dir>   (REF_F32=1: float32 as the originals; REF_PLUS_ONE=1: their <=)
import json, math, os, sys
import torch
import transformers as tf
from safetensors.torch import load_file

src, work = sys.argv[1], sys.argv[2]
cal = json.load(open(os.path.join(work, "calib.json")))
ids = torch.tensor(cal["ids"]).reshape(cal["samples"], cal["seqlen"])


def blocks(model):  # the decoder blocks and their state-dict prefix (LLaMA / Mistral, OPT, GPT-NeoX)
    for path in ["model.layers", "model.decoder.layers", "gpt_neox.layers"]:
        obj = model
        try:
            for p in path.split("."):
                obj = getattr(obj, p)
            return obj, path
        except AttributeError:
            pass
    raise SystemExit("unsupported model (the references handle LLaMA-like, OPT and NeoX blocks)")


def linears(layer):  # wanda's find_layers: every nn.Linear of the block
    return {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}


def lin(layer, n):
    return linears(layer)[n]


class Wanda:  # WrappedGPT
    def __init__(self, l):
        self.scaler_row = torch.zeros(l.weight.shape[1], dtype=DT); self.n = 0
    def add_batch(self, inp):
        inp = inp.reshape(-1, inp.shape[-1]).t()
        tmp = 1
        self.scaler_row *= self.n / (self.n + tmp); self.n += tmp
        self.scaler_row += torch.norm(inp.to(DT), p=2, dim=1) ** 2 / self.n
    def prune(self, l, n, m):
        W = l.weight.data
        M = W.abs() * torch.sqrt(self.scaler_row.float().reshape(1, -1))
        mask = torch.zeros_like(M, dtype=torch.bool)
        if n:
            for ii in range(0, M.shape[1], m):
                mask.scatter_(1, ii + torch.topk(M[:, ii:ii + m], n, dim=1, largest=False)[1], True)
        else:
            idx = torch.sort(M, dim=-1, stable=True)[1][:, : int(M.shape[1] * 0.5)]
            mask.scatter_(1, idx, True)
        W[mask] = 0


class SparseGPT:
    def __init__(self, l):
        c = l.weight.shape[1]; self.H = torch.zeros(c, c, dtype=DT); self.n = 0
    def add_batch(self, inp):
        inp = inp.reshape(-1, inp.shape[-1]).t().to(DT)
        tmp = 1
        self.H *= self.n / (self.n + tmp); self.n += tmp
        inp = math.sqrt(2 / self.n) * inp
        self.H += inp.matmul(inp.t())
    def prune(self, l, prunen, prunem, blocksize=128, percdamp=0.01):
        W = l.weight.data.clone().to(DT); H = self.H.clone(); cols = W.shape[1]
        dead = torch.diag(H) == 0; H[dead, dead] = 1; W[:, dead] = 0
        H[range(cols), range(cols)] += percdamp * torch.mean(torch.diag(H))
        H = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True); Hinv = H
        for i1 in range(0, cols, blocksize):
            i2 = min(i1 + blocksize, cols); count = i2 - i1
            W1 = W[:, i1:i2].clone(); Q1 = torch.zeros_like(W1); Err1 = torch.zeros_like(W1); Hinv1 = Hinv[i1:i2, i1:i2]
            if prunen == 0:
                tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                k = int(tmp.numel() * 0.5)
                # perp prunes exactly k per block (README); the reference's `<= sorted[k]` prunes k + 1
                mask1 = torch.zeros_like(W1, dtype=torch.bool).flatten()
                mask1[torch.sort(tmp.flatten(), stable=True)[1][: (k + 1 if REF_PLUS_ONE else k)]] = True
                mask1 = mask1.reshape(W1.shape)
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
            for i in range(count):
                w = W1[:, i]; d = Hinv1[i, i]
                if prunen != 0 and i % prunem == 0:
                    tmp = W1[:, i:i + prunem] ** 2 / (torch.diag(Hinv1)[i:i + prunem].reshape((1, -1))) ** 2
                    mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
                q = w.clone(); q[mask1[:, i]] = 0; Q1[:, i] = q
                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0)); Err1[:, i] = err1
            W[:, i1:i2] = Q1
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
        l.weight.data = W.float()


REF_PLUS_ONE = os.environ.get("REF_PLUS_ONE") == "1"
DT = torch.float32 if os.environ.get("REF_F32") == "1" else torch.float64  # the originals run float32
torch.set_grad_enabled(False)
for method, cls in [("wanda", Wanda), ("sparsegpt", SparseGPT)]:
    for pat, (n, m) in [("unstructured", (0, 0)), ("2of4", (2, 4)), ("4of8", (4, 8))]:
        if not os.path.exists(os.path.join(work, f"{method}-{pat}", "model.safetensors")):
            continue  # perp refused the pattern (prune-dump says why)
        model = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
        layers, prefix = blocks(model)
        for li, layer in enumerate(layers):
            NAMES = list(linears(layer))
            st = {nm: cls(lin(layer, nm)) for nm in NAMES}
            hs = [lin(layer, nm).register_forward_hook(lambda _m, inp, _o, nm=nm: st[nm].add_batch(inp[0].data)) for nm in NAMES]
            for j in range(ids.shape[0]):  # one sample per forward, as the references
                model(ids[j : j + 1])
            for h in hs: h.remove()
            for nm in NAMES: st[nm].prune(lin(layer, nm), n, m)
        ours = load_file(os.path.join(work, f"{method}-{pat}", "model.safetensors"))
        agree, total, werr, wnorm = 0, 0, 0.0, 0.0
        worst = (1.0, "")
        for li, layer in enumerate(layers):
            for nm in linears(layer):
                key = f"{prefix}.{li}.{nm}.weight"
                Wr = lin(layer, nm).weight.data; Wo = ours[key]
                a = ((Wr == 0) == (Wo == 0)).float().mean().item()
                agree += a * Wr.numel(); total += Wr.numel()
                werr += ((Wr - Wo) ** 2).sum().item(); wnorm += (Wr ** 2).sum().item()
                if a < worst[0]: worst = (a, key)
        print(f"{method:9s} {pat:12s} masks agree on {agree / total:.6f} of weights (worst {worst[0]:.4f} {worst[1]}), "
              f"weights rel. diff {math.sqrt(werr / wnorm):.2e}, ref sparsity "
              f"{sum((m.weight == 0).sum().item() for l in layers for m in linears(l).values()) / total:.5f}")
