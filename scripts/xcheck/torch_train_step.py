"""PyTorch counterpart of `npm run bench:train` (dev only, needs torch; CI never runs it).

One llama768 retraining step (1x512 tokens, forward + backward + AdamW + zero_grad) on the model of
../shared/bench/torch_bench.py, full (every parameter) vs PEFT (RMSNorm weights + LoRA r=16 on every block linear),
each in a fresh process, three rounds alternating; median of steps 2-4 and peak RSS. Prints one JSON line.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 scripts/xcheck/torch_train_step.py [--threads 2]
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "..", "shared", "bench")


def one(mode, threads):
    sys.path.insert(0, BENCH)
    import torch
    import torch.nn.functional as F
    import torch_bench as tb  # noqa: E402  (sets OpenBLAS defaults before torch is imported there)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = tb.Model(tb.CFG)
    if mode == "full":
        params = list(model.parameters())
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        for blk in model.layers:
            for n in tb.NAMES:
                setattr(blk, n, tb.LoRALinear(getattr(blk, n), 16, 32, False))
        params = [m.weight for m in model.modules() if isinstance(m, tb.RMSNorm)]
        for p in params:
            p.requires_grad_(True)
        params += [p for m in model.modules() if isinstance(m, tb.LoRALinear) for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    T = tb.CFG["seq_len"]
    ts = []
    for _ in range(4):
        x = torch.randint(0, tb.CFG["vocab_size"], (1, T))
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x)[0, :-1], x[0, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ts.append(time.perf_counter() - t0)
    return dict(mode=mode, trainable=sum(p.numel() for p in params), step_s=sorted(ts[1:])[1],
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    if "--one" in sys.argv:
        print(json.dumps(one(sys.argv[sys.argv.index("--one") + 1], threads)))
        return
    res = {"full": [], "peft": []}
    for _ in range(3):
        for m in ("full", "peft"):
            out = subprocess.run([sys.executable, __file__, "--one", m, "--threads", str(threads)], check=True,
                                 capture_output=True, text=True).stdout
            res[m].append(json.loads(out.strip().splitlines()[-1]))
    step = {m: statistics.median(r["step_s"] for r in res[m]) for m in res}
    print(json.dumps(dict(
        torch_train_step_full_tok_s=round(512 / step["full"], 1), torch_train_step_peft_tok_s=round(512 / step["peft"], 1),
        torch_train_peft_over_full=round(step["full"] / step["peft"], 3),
        torch_train_peak_rss_full_mb=max(r["peak_rss_mb"] for r in res["full"]),
        torch_train_peak_rss_peft_mb=max(r["peak_rss_mb"] for r in res["peft"]),
        trainable_full=res["full"][0]["trainable"], trainable_peft=res["peft"][0]["trainable"],
        openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"), threads=threads)))


if __name__ == "__main__":
    main()
