# Reads perp's compressed-tensors export the way neuralmagic/compressed-tensors does (sparse_bitmask.py /
# sparse_24_bitmask.py: numpy.unpackbits(bitorder="little", count=cols) along the last axis, values scattered into the
# set bits row-major) and compares every weight with the dense export. Dev check, never CI:
#   python scripts/xcheck/ct_decompress.py <run dir>      (export-compressed/ beside model/ or pruned/)
import json, os, sys
import numpy as np
import torch
from safetensors.torch import load_file

run = sys.argv[1]
cdir = os.path.join(run, "export-compressed")
dense_dir = os.path.join(run, "model") if os.path.isdir(os.path.join(run, "model")) else os.path.join(run, "pruned")
cfg = json.load(open(os.path.join(cdir, "config.json")))["quantization_config"]
fmt = cfg["format"]
c = load_file(os.path.join(cdir, "model.safetensors"))
d = load_file(os.path.join(dense_dir, "model.safetensors"))
n = bad = 0
for k in [k for k in c if k.endswith(".bitmask")]:
    p = k[: -len(".bitmask")]
    shape = [int(x) for x in c[p + ".shape"].flatten().tolist()]
    bits = np.unpackbits(c[k].numpy(), axis=-1, count=shape[-1], bitorder="little").reshape(shape).astype(bool)
    w = torch.zeros(shape, dtype=c[p + ".compressed"].dtype)
    w[torch.from_numpy(bits)] = c[p + ".compressed"].flatten()
    if fmt == "sparse-bitmask":
        counts = torch.from_numpy(bits).sum(-1)
        assert torch.equal(c[p + ".row_offsets"], torch.cumsum(counts, 0) - counts), p
    n += 1
    if not torch.equal(w, d[p + ".weight"]): bad += 1
others = [k for k in d if not any(k == q[: -len(".bitmask")] + ".weight" for q in c if q.endswith(".bitmask"))]
same = all(torch.equal(c[k], d[k]) for k in others)
print(f"{fmt}: {n} compressed weights, {bad} differ from the dense export; {len(others)} other tensors identical: {same}")
