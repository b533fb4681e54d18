// `node --import tsx scripts/gemm-diag.ts`: where the engine's GEMM stands on a new machine, one JSON line per
// measurement. FMA peak on 1 and 2 threads (two vCPUs that are hyper-threads of one core show a 2-thread peak near the
// 1-thread one); the micro-kernel with its operands in L2; sgemm 4096³ on one thread and, on two, under candidate
// blockings taken in turn (share of a peak read just before each, as the bench does); the llama768 product shapes on
// two threads (a reused C, a fresh C: first-touch page faults, one thread); a 64 MB copy. Used on an Intel Xeon in
// session 16 (docs/performance-log.md). A dev tool, not a test.
import { median, sgemmVsPeak } from "../src/bench/engine.js";
import { newF32 } from "../src/tensor/arena.js";
import { K } from "../src/tensor/native.js";
import { Rng } from "../src/tensor/rng.js";

const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const now = () => performance.now() / 1000;
const rng = new Rng(0);
const rnd = (n: number) => rng.fillNormal(newF32(n)) as Float32Array;
const t0 = now();
const initial = K.gemmBlocking();
const use = (c: number[]) => K.gemmBlocking(c[0], -1, c[1], c[2]);
const threads = K.threads();

for (const t of [1, 2]) {
  K.setThreads(t);
  out({ peak_threads: t, gflops: Array.from({ length: 5 }, () => +K.peakGflops(0.2).toFixed(1)) });
}

{
  const [M, N, Kd] = [480, 256, 256];
  const A = rnd(M * Kd);
  const B = rnd(Kd * N);
  const C = newF32(M * N);
  for (const t of [1, 2]) {
    K.setThreads(t);
    for (let i = 0; i < 50; i++) K.gemm(C, A, B, M, N, Kd, false, false, 1, 0);
    const rates: number[] = [];
    for (let r = 0; r < 5; r++) {
      const s = now();
      for (let i = 0; i < 200; i++) K.gemm(C, A, B, M, N, Kd, false, false, 1, 0);
      rates.push((200 * 2 * M * N * Kd) / (now() - s) / 1e9);
    }
    const peak = K.peakGflops(0.2);
    out({ hot: `${M}x${N}x${Kd}`, threads: t, pct_peak: rates.map((x) => +((100 * x) / peak).toFixed(1)) });
  }
}

{
  const n = 4096;
  const A = rnd(n * n);
  const B = rnd(n * n);
  const C = newF32(n * n);
  K.setThreads(1);
  K.gemm(C, A, B, n, n, n, false, false, 1, 0); // first touch of C and of the pack buffers
  out({ sgemm_1_thread_pct_peak: +(100 * sgemmVsPeak(C, A, B, n).share).toFixed(1) });
  K.setThreads(2);
  const cands = [
    [initial.kc, initial.mcp, initial.jg],
    [1024, 48, 3],
    [1024, 48, 6],
    [1024, 48, 8],
    [512, 24, 8],
    [1024, 24, 3],
  ];
  const shares = cands.map(() => [] as number[]);
  for (let r = 0; r < 3; r++)
    cands.forEach((c, i) => {
      use(c);
      shares[i].push(+(100 * sgemmVsPeak(C, A, B, n).share).toFixed(1));
    });
  for (const [i, c] of cands.entries()) out({ sgemm_2_threads_blocking: c.join("/"), pct_peak: shares[i] });
  use([initial.kc, initial.mcp, initial.jg]);
}

{
  // [name, M, N, K, transA, transB]: forward, dX and dW of the MLP, the LM head, a 768-wide projection
  const shapes: [string, number, number, number, boolean, boolean][] = [
    ["fwd NT 512x2048x768", 512, 2048, 768, false, true],
    ["dX NN 512x768x2048", 512, 768, 2048, false, false],
    ["dW TN 2048x768x512", 2048, 768, 512, true, false],
    ["head NT 512x32000x768", 512, 32000, 768, false, true],
    ["q NT 512x768x768", 512, 768, 768, false, true],
  ];
  K.setThreads(2);
  for (const [name, M, N, Kd, ta, tb] of shapes) {
    const A = rnd(M * Kd);
    const B = rnd(Kd * N);
    const C = newF32(M * N);
    const f = 2 * M * N * Kd;
    const reps = N > 4096 ? 3 : 15;
    const time = (c: Float32Array) => {
      const s = now();
      K.gemm(c, A, B, M, N, Kd, ta, tb, 1, 0);
      return f / (now() - s) / 1e9;
    };
    time(C);
    const reused = median(Array.from({ length: reps }, () => time(C)));
    const fresh = median(Array.from({ length: Math.min(reps, 5) }, () => time(newF32(M * N))));
    K.setThreads(1);
    const one = time(C);
    K.setThreads(2);
    out({ shape: name, gflops: +reused.toFixed(1), fresh_c: +fresh.toFixed(1), one_thread: +one.toFixed(1) });
  }
}

{
  const n = 16 << 20;
  const a = rnd(n);
  const d = newF32(n);
  const time = (f: () => void) => {
    const s = now();
    f();
    return now() - s;
  };
  const gbs = (t: number) => +((3 * 4 * n) / t / 1e9).toFixed(1);
  out({
    copy_64mb_gbs: gbs(median(Array.from({ length: 5 }, () => time(() => K.ew(0, d, a, a, 0))))),
    fresh_dest_gbs: gbs(median(Array.from({ length: 5 }, () => time(() => K.ew(0, newF32(n), a, a, 0))))),
  });
}
K.setThreads(threads);
out({ seconds: +(now() - t0).toFixed(1) });
