import { newF32 } from "/work/main/src/tensor/arena.js";
import { K } from "/work/main/src/tensor/native.js";
import { Rng } from "/work/main/src/tensor/rng.js";
const n = Number(process.env.N ?? 4096);
const rng = new Rng(0);
const A = rng.fillNormal(newF32(n * n)) as Float32Array;
const B = rng.fillNormal(newF32(n * n)) as Float32Array;
const C = newF32(n * n);
const reps = Number(process.env.R ?? 6);
for (let r = 0; r < reps; r++) {
  const p = K.peakGflops(0.1);
  const t = performance.now();
  K.gemm(C, A, B, n, n, n, false, false, 1, 0);
  const dt = (performance.now() - t) / 1000;
  console.log(((2 * n ** 3) / dt / 1e9).toFixed(1), "GF/s", (((2 * n ** 3) / dt / 1e9 / p) * 100).toFixed(1), "% of", p.toFixed(1));
}
