// `node --import tsx scripts/gemm-blocking.ts [n] [rounds] kc,mcp,jg [kc,mcp,jg ...]`: sgemm n³ (default 4096) under
// each candidate GEMM blocking (K block, row block in MR panels, B panels per column group), the candidates taken in
// turn product by product in one process, each product paired with an FMA-peak reading taken just before it. A
// shared VM drifts by 10-20% within a minute, and separate processes per candidate mostly measure that drift: this is
// how the default blocking (native/gemm.cc) was chosen. Prints the median and mean share of peak per candidate.
import { median, sgemmVsPeak } from "../src/bench/engine.js";
import { newF32 } from "../src/tensor/arena.js";
import { K } from "../src/tensor/native.js";
import { Rng } from "../src/tensor/rng.js";

const args = process.argv.slice(2);
const nums = args.filter((a) => /^\d+$/.test(a)).map(Number);
const n = nums[0] ?? 4096;
const rounds = nums[1] ?? 15;
const cands = args.filter((a) => a.includes(",")).map((a) => a.split(",").map(Number));
if (!cands.length) {
  const b = K.gemmBlocking();
  cands.push([b.kc, b.mcp, b.jg], [512, 24, 8]);
}
const rng = new Rng(0);
const A = rng.fillNormal(newF32(n * n)) as Float32Array;
const B = rng.fillNormal(newF32(n * n)) as Float32Array;
const C = newF32(n * n);
const use = (c: number[]) => K.gemmBlocking(c[0], -1, c[1], c[2]);
const shares = cands.map(() => [] as number[]);
for (const c of cands) {
  use(c);
  K.gemm(C, A, B, n, n, n, false, false, 1, 0);
}
for (let r = 0; r < rounds; r++) {
  cands.forEach((c, i) => {
    use(c);
    shares[i].push(sgemmVsPeak(C, A, B, n).share);
  });
}
cands.forEach((c, i) => {
  const mean = shares[i].reduce((a, b) => a + b, 0) / rounds;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  console.log(
    `kc ${c[0]} mcp ${c[1]} jg ${c[2]}: median ${pct(median(shares[i]))}, mean ${pct(mean)} of peak (${rounds})`,
  );
});
