// Every native kernel against its TS twin, on every CPU path this machine supports, over random awkward shapes.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { type CpuPath, isNative, K, refK } from "../src/tensor/native.js";
import { f16ToF32 } from "../src/tensor/ref/kernels.js";
import { AWKWARD, bitsEqual, expectClose, randF32 } from "./helpers.js";

const paths: CpuPath[] = isNative ? K.cpu().supported : ["scalar"];
const initial = K.cpu().active;
afterAll(() => {
  K.setCpu(initial);
});

const dim = fc.constantFrom(...AWKWARD);
const largeRefs = new Map<string, Float64Array>();
const runs = { numRuns: 12, seed: 42 };

function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  return Uint16Array.from(u, (v) => v >>> 16);
}

function toF16(x: Float32Array): Uint16Array {
  // Round-trip through a simple converter (values are O(1), no subnormal/overflow cases needed here).
  return Uint16Array.from(x, (v) => {
    const s = v < 0 ? 0x8000 : 0;
    const a = Math.abs(v);
    if (a < 2 ** -14) return s;
    const e = Math.floor(Math.log2(a));
    const m = Math.round((a / 2 ** e - 1) * 1024);
    return m === 1024 ? s | ((e + 16) << 10) : s | ((e + 15) << 10) | m;
  });
}

/** Every (transA, transB) combination. */
const TRANSPOSES = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

/**
 * One GEMM case, C = 0.75 (op(A) op(B) + A2 B2ᵀ) + 0.5 C0 (the A2 B2ᵀ term when K2 > 0), with random operands from
 * `seed` on: `run` computes it natively on `threads` threads (with a pre-packed B when given), `ref` in float64.
 */
function gemmCase(
  M: number,
  N: number,
  Kd: number,
  ta: boolean,
  tb: boolean,
  K2: number,
  btype: "f32" | "bf16",
  seed: number,
) {
  const B = randF32(Kd * N, seed + 1);
  const A = randF32(M * Kd, seed);
  const Bw = btype === "bf16" ? toBf16(B) : B;
  const A2 = randF32(M * Math.max(K2, 1), seed + 2);
  const B2 = randF32(Math.max(K2, 1) * N, seed + 3);
  const C0 = randF32(M * N, seed + 4);
  const [a2, b2] = K2 > 0 ? [A2, B2] : [undefined, undefined];
  const u = undefined;
  const run = (threads: number, pk?: Float32Array) => {
    K.setThreads(threads);
    const o = C0.slice();
    K.gemm(o, A, Bw as never, M, N, Kd, ta, tb, 0.75, 0.5, btype, u, u, u, a2, b2, K2, false, true, pk);
    return o;
  };
  const ref = () => {
    const r = Float64Array.from(C0);
    const Br = btype === "bf16" ? Bw : Float64Array.from(B);
    const [A64, A264, B264] = [A, A2, B2].map((x) => Float64Array.from(x));
    const args = [M, N, Kd, ta, tb, 0.75, 0.5, btype, u, u, u] as const;
    if (K2 > 0) refK.gemm(r, A64, Br, ...args, A264, B264, K2, false, true);
    else refK.gemm(r, A64, Br, ...args);
    return r;
  };
  return { Bw, run, ref };
}

/** Runs fn, then restores the GEMM blocking and the thread count it may have changed. */
function withGemmBlocking(fn: () => void): void {
  const saved = K.gemmBlocking();
  const threads = K.threads();
  try {
    fn();
  } finally {
    K.setThreads(threads);
    K.gemmBlocking(saved.kc, -1, saved.mcp, saved.jg);
  }
}

describe.each(paths)("cpu path %s", (path) => {
  it("is selectable", () => {
    expect(K.setCpu(path)).toBe(true);
    expect(K.cpu().active).toBe(path);
  });

  it("gemm: all transposes, alpha/beta, awkward shapes", () => {
    K.setCpu(path);
    fc.assert(
      fc.property(dim, dim, dim, fc.boolean(), fc.boolean(), fc.constantFrom(0, 1, -0.5), (M, N, Kd, ta, tb, beta) => {
        const A = randF32(M * Kd, M + N);
        const B = randF32(Kd * N, Kd + 7);
        const C0 = randF32(M * N, 99);
        const c = C0.slice();
        const r = Float64Array.from(C0);
        K.gemm(c, A, B, M, N, Kd, ta, tb, 0.75, beta);
        refK.gemm(r, Float64Array.from(A), Float64Array.from(B), M, N, Kd, ta, tb, 0.75, beta);
        expectClose(c, r, 1e-5 * Math.sqrt(Kd), 1e-5, `gemm ${M}x${N}x${Kd} ${ta}${tb}`);
      }),
      runs,
    );
  });

  it("sparsegptObs: the OBS pass equals the TS twin bit for bit (unstructured, 2:4, 4:8; awkward widths)", () => {
    K.setCpu(path);
    for (const [rows, bs, n, m] of [
      [7, 17, 0, 0],
      [33, 128, 0, 0],
      [5, 24, 2, 4],
      [19, 64, 4, 8],
      [3, 1, 0, 0],
    ]) {
      const ldu = bs + 5;
      const Ufull = randF32(bs * ldu, rows + bs);
      const d = Float32Array.from({ length: bs }, (_, i) => 0.5 + Ufull[i * ldu + i] ** 2);
      const W = randF32(rows * bs, 3 * rows);
      const mask = Uint8Array.from({ length: rows * bs }, (_, i) => (m ? 1 : (i * 7919) % 3 ? 1 : 0));
      const [w1, e1, k1] = [W.slice(), new Float32Array(rows * bs), mask.slice()];
      const [w2, e2, k2] = [W.slice(), new Float32Array(rows * bs), mask.slice()];
      const l1 = K.sparsegptObs(w1, e1, k1, Ufull, ldu, d, rows, bs, n, m);
      const l2 = refK.sparsegptObs(w2, e2, k2, Ufull, ldu, d, rows, bs, n, m);
      const what = `${rows}x${bs} ${n}:${m}`;
      expect(Array.from(w1), what).toEqual(Array.from(w2));
      expect(Array.from(e1), what).toEqual(Array.from(e2));
      expect(Array.from(k1), what).toEqual(Array.from(k2));
      expect(Math.abs(l1 - l2), what).toBeLessThanOrEqual(1e-12 * Math.abs(l2));
      if (m) for (let g = 0; g < rows * bs; g += m) expect(k1.subarray(g, g + m).reduce((a, b) => a + b, 0)).toBe(n);
      // pruned weights end at zero, kept ones moved by the updates of earlier columns
      for (let i = 0; i < rows * bs; i++) if (!k1[i]) expect(w1[i]).toBe(0);
    }
    expect(() =>
      K.sparsegptObs(
        new Float32Array(4),
        new Float32Array(4),
        new Uint8Array(4),
        new Float32Array(4),
        2,
        Float32Array.of(1, 0),
        2,
        2,
        0,
        0,
      ),
    ).toThrow(/d\[1\] is zero/);
    expect(() =>
      K.sparsegptObs(
        new Float32Array(8),
        new Float32Array(8),
        new Uint8Array(8),
        new Float32Array(16),
        4,
        new Float32Array(4).fill(1),
        2,
        4,
        2,
        3,
      ),
    ).toThrow(/N:M 2:3 does not fit/);
  });

  it("gemm: a large 1000-sized case and strided operands", () => {
    K.setCpu(path);
    const [M, N, Kd] = [1000, 33, 129];
    const A = randF32(M * Kd, 1);
    const B = randF32(N * Kd, 2);
    const c = new Float32Array(M * N);
    const r = new Float64Array(M * N);
    K.gemm(c, A, B, M, N, Kd, false, true, 1, 0);
    refK.gemm(r, Float64Array.from(A), Float64Array.from(B), M, N, Kd, false, true, 1, 0);
    expectClose(c, r, 1e-4, 1e-5, "gemm 1000");
    // sub-matrix views through leading dimensions: columns 5..5+17 of a (40 x 64) A
    const Abig = randF32(40 * 64, 3);
    const cs = new Float32Array(40 * 9);
    const rs = new Float64Array(40 * 9);
    const Bs = randF32(17 * 9, 4);
    K.gemm(cs, Abig.subarray(5), Bs, 40, 9, 17, false, false, 1, 0, "f32", 64, 9, 9);
    refK.gemm(rs, Float64Array.from(Abig.subarray(5)), Float64Array.from(Bs), 40, 9, 17, false, false, 1, 0, "f32", 64);
    expectClose(cs, rs, 1e-5, 1e-5, "strided gemm");
  });

  it("gemm: skinny LoRA-rank shapes (inner-product, in-place and transposed-output paths), padded strides", () => {
    K.setCpu(path);
    for (const [M, N, Kd] of [
      [64, 16, 64],
      [200, 17, 100],
      [130, 32, 768],
      [70, 5, 600], // K in chunks of 256 with a masked tail
      [16, 300, 70],
      [13, 65, 40],
      [300, 1, 33],
      [96, 16, 16],
    ]) {
      for (const [ta, tb] of TRANSPOSES) {
        for (const beta of [0, -0.5]) {
          // leading dimensions with 3 floats of padding per row
          const lda = (ta ? M : Kd) + 3;
          const ldb = (tb ? Kd : N) + 3;
          const A = randF32((ta ? Kd : M) * lda, M + Kd);
          const B = randF32((tb ? N : Kd) * ldb, N + 5);
          const C0 = randF32(M * N, 9);
          const c = C0.slice();
          const r = Float64Array.from(C0);
          K.gemm(c, A, B, M, N, Kd, ta, tb, 1.5, beta, "f32", lda, ldb, N);
          refK.gemm(r, Float64Array.from(A), Float64Array.from(B), M, N, Kd, ta, tb, 1.5, beta, "f32", lda, ldb, N);
          expectClose(c, r, 1e-5 * Math.sqrt(Kd), 1e-5, `gemm ${M}x${N}x${Kd} ${ta}${tb} beta ${beta}`);
          if (!isNative) continue;
          const before = K.threads();
          const outs = [1, 2].map((t) => {
            K.setThreads(t);
            const o = C0.slice();
            K.gemm(o, A, B, M, N, Kd, ta, tb, 1.5, beta, "f32", lda, ldb, N);
            return o;
          });
          K.setThreads(before);
          expect(bitsEqual(outs[0], outs[1]), `threads ${M}x${N}x${Kd} ${ta}${tb}`).toBe(true);
        }
      }
    }
  });

  it.skipIf(!isNative)(
    "gemm: large products share packed B blocks among threads (rows split, one barrier a block)",
    () => {
      K.setCpu(path);
      withGemmBlocking(() => {
        // Small blocks so these sizes cross several K blocks (both halves of the double buffer) and column blocks;
        // groups of 2 B panels leave a partial group in every 3-panel column block.
        const saved = K.gemmBlocking();
        const blockings = [
          [saved.kc, -1, saved.mcp, saved.jg],
          [64, 96, 4, 2],
        ];
        for (const blocking of blockings) {
          K.gemmBlocking(blocking[0], blocking[1], blocking[2], blocking[3]);
          for (const [M, N, Kd, ta, tb, K2, btype] of [
            // (Aᵀ operands: a row-major A is read in place where the ISA has a rows micro-kernel, and then splits by
            // columns, each thread packing only its own B panels)
            [260, 200, 500, true, false, 0, "f32"],
            [200, 260, 500, true, true, 0, "f32"],
            [260, 200, 480, true, true, 16, "f32"],
            [260, 200, 500, true, true, 0, "bf16"],
          ] as const) {
            const { run, ref } = gemmCase(M, N, Kd, ta, tb, K2, btype, 11);
            const before = K.threads();
            const coop0 = K.gemmBlocking().coopGemms;
            const [one, two] = [run(1), run(2)];
            const coop1 = K.gemmBlocking().coopGemms;
            K.setThreads(before);
            const label = `${M}x${N}x${Kd}${ta ? " tA" : ""}${tb ? " tB" : ""}+${K2} ${btype} blocking ${blocking}`;
            // (the path needs a CPU per thread: GEMMs with more threads than CPUs split without barriers)
            if (cpus().length >= 2) expect(coop1 - coop0, `${label}: shared-B path taken`).toBe(1);
            expect(bitsEqual(one, two), `${label}: 1 vs 2 threads`).toBe(true);
            // The float64 reference depends on neither the path nor the blocking: computed once per shape.
            const key = `${label.split(" blocking")[0]} ${ta}${tb}`;
            let r = largeRefs.get(key);
            if (!r) {
              r = ref();
              largeRefs.set(key, r);
            }
            expectClose(two, r, 1e-5 * Math.sqrt(Kd + K2), 1e-5, label);
          }
        }
      });
    },
  );

  it.skipIf(!isNative)(
    "gemm: every packing path (k-major and transposing; narrow A and wide B panels; ragged edges; K blocks that end mid-group)",
    () => {
      K.setCpu(path);
      withGemmBlocking(() => {
        // KC 40 leaves K blocks of 40 and a last one of 17/21 rows (not a multiple of 16); M 37 leaves a ragged A panel,
        // N 70 a ragged B panel; the B row stride (N or K) is not a multiple of a cache line.
        for (const kc of [40]) {
          K.gemmBlocking(kc, 0, 0);
          for (const [M, N, Kd] of [
            [37, 70, 97],
            [130, 45, 101],
          ]) {
            for (const [ta, tb] of TRANSPOSES) {
              for (const btype of ["f32", "bf16"] as const) {
                const A = randF32(M * Kd, M + Kd);
                const B = randF32(Kd * N, N + 3);
                const Bw = btype === "bf16" ? toBf16(B) : B;
                const C0 = randF32(M * N, 5);
                const c = C0.slice();
                const r = Float64Array.from(C0);
                K.gemm(c, A, Bw as never, M, N, Kd, ta, tb, 1.25, 0.5, btype);
                refK.gemm(
                  r,
                  Float64Array.from(A),
                  btype === "bf16" ? Bw : Float64Array.from(B),
                  M,
                  N,
                  Kd,
                  ta,
                  tb,
                  1.25,
                  0.5,
                  btype,
                );
                expectClose(c, r, 1e-5 * Math.sqrt(Kd), 1e-5, `gemm ${M}x${N}x${Kd} ${ta}${tb} ${btype} kc ${kc}`);
              }
            }
          }
        }
      });
    },
  );

  it.skipIf(!isNative)(
    "gemm: a row-major A read in place, columns split with a dynamic tail: 1 vs 2 threads bitwise, packed or not",
    () => {
      K.setCpu(path);
      withGemmBlocking(() => {
        // Ragged M and N; one, two (a dynamic tail) and, under kc 128, three K blocks (a static column split); a LoRA
        // term; a bf16 B; a pre-packed B split by columns too.
        for (const kc of [0, 128]) {
          if (kc) K.gemmBlocking(kc, 0, 0);
          for (const [M, N, Kd, tb, K2, btype] of [
            [100, 700, 300, true, 16, "f32"],
            [37, 530, 1100, false, 0, "bf16"],
            [61, 300, 200, true, 0, "f32"],
          ] as const) {
            const { Bw, run, ref } = gemmCase(M, N, Kd, false, tb, K2, btype, 31);
            const packed = K.gemmPack(Bw, Kd, N, tb, btype, K2);
            const label = `${M}x${N}x${Kd}${tb ? " tB" : ""}+${K2} ${btype} kc ${kc || "default"}`;
            const c0 = K.gemmBlocking().colsGemms;
            const one = run(1);
            const two = run(2);
            const twoPacked = run(2, packed);
            // (the column split needs a rows micro-kernel, which the scalar path does not have)
            if (path !== "scalar") expect(K.gemmBlocking().colsGemms - c0, `${label}: column split taken`).toBe(2);
            expect(bitsEqual(one, two), `${label}: 1 vs 2 threads`).toBe(true);
            expect(bitsEqual(two, twoPacked), `${label}: pre-packed, 2 threads`).toBe(true);
            expectClose(two, ref(), 1e-5 * Math.sqrt(Kd + K2), 1e-5, label);
          }
        }
      });
    },
  );

  it.skipIf(!isNative)(
    "gemm: a pre-packed B gives the same bits as packing at the call, and a stale one is ignored",
    () => {
      K.setCpu(path);
      withGemmBlocking(() => {
        // kc 64 / nc 96: several K blocks and column blocks; N 70 leaves a ragged last panel; K2 16 a LoRA term;
        // N 230 splits by columns on 2 threads (each thread a column range of the packed panels, the second one
        // starting inside a column block).
        K.gemmBlocking(64, 96, 4);
        for (const [M, N, Kd, ta, tb, K2, btype] of [
          [150, 70, 200, false, true, 16, "f32"],
          [100, 230, 200, false, true, 16, "f32"],
          [100, 230, 200, false, false, 0, "bf16"],
          [150, 70, 200, false, false, 16, "f32"],
          [130, 200, 70, true, true, 0, "f32"],
          [150, 70, 200, false, true, 8, "bf16"],
        ] as const) {
          const { Bw, run } = gemmCase(M, N, Kd, ta, tb, K2, btype, 21);
          const packed = K.gemmPack(Bw, Kd, N, tb, btype, K2);
          const label = `${M}x${N}x${Kd}${ta ? " tA" : ""}${tb ? " tB" : ""}+${K2} ${btype}`;
          const outs: Float32Array[] = [];
          for (const threads of [1, 2]) {
            const n0 = K.gemmBlocking().packedGemms;
            const withPack = run(threads, packed);
            outs.push(withPack);
            expect(K.gemmBlocking().packedGemms - n0, `${label}: pre-packed path taken`).toBe(1);
            expect(
              bitsEqual(withPack, run(threads)),
              `${label}, ${threads} threads: pre-packed vs packed at the call`,
            ).toBe(true);
          }
          expect(bitsEqual(outs[0], outs[1]), `${label}: pre-packed, 1 vs 2 threads`).toBe(true);
          // A pack made under another blocking does not match: the call packs B itself (same result, path not taken).
          K.gemmBlocking(96, 0, 0);
          const n1 = K.gemmBlocking().packedGemms;
          const stale = run(2, packed);
          expect(K.gemmBlocking().packedGemms - n1, `${label}: stale pack ignored`).toBe(0);
          expect(bitsEqual(stale, run(2)), `${label}: stale pack, same bits`).toBe(true);
          K.gemmBlocking(64, 0, 0);
        }
      });
    },
  );

  it("gemm: a second product appended along K (the fused LoRA term)", () => {
    K.setCpu(path);
    fc.assert(
      fc.property(
        dim,
        dim,
        fc.constantFrom(0, 1, 17, 400),
        fc.constantFrom(1, 16, 33),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        (M, N, Kd, K2, ta, tb, ta2, tb2) => {
          const A = randF32(M * Kd, 1);
          const B = randF32(Kd * N, 2);
          const A2 = randF32(M * K2, 3);
          const B2 = randF32(K2 * N, 4);
          const C0 = randF32(M * N, 5);
          const c = C0.slice();
          const r = Float64Array.from(C0);
          const args = [M, N, Kd, ta, tb, 0.5, -1, "f32", undefined, undefined, undefined] as const;
          K.gemm(c, A, B, ...args, A2, B2, K2, ta2, tb2);
          refK.gemm(
            r,
            Float64Array.from(A),
            Float64Array.from(B),
            ...args,
            Float64Array.from(A2),
            Float64Array.from(B2),
            K2,
            ta2,
            tb2,
          );
          expectClose(c, r, 1e-5 * Math.sqrt(Kd + K2), 1e-5, `gemm2 ${M}x${N}x${Kd}+${K2}`);
          if (!isNative) return;
          const before = K.threads();
          const outs = [1, 2].map((t) => {
            K.setThreads(t);
            const o = C0.slice();
            K.gemm(o, A, B, ...args, A2, B2, K2, ta2, tb2);
            return o;
          });
          K.setThreads(before);
          expect(bitsEqual(outs[0], outs[1])).toBe(true);
        },
      ),
      runs,
    );
  });

  it("gemm: bf16 and f16 B operands are widened exactly", () => {
    K.setCpu(path);
    for (const [name, conv] of [
      ["bf16", toBf16],
      ["f16", toF16],
    ] as const) {
      const [M, N, Kd] = [33, 17, 129];
      const A = randF32(M * Kd, 5);
      const Bh = conv(randF32(N * Kd, 6));
      const c = new Float32Array(M * N);
      const r = new Float64Array(M * N);
      K.gemm(c, A, Bh as never, M, N, Kd, false, true, 1, 0, name);
      refK.gemm(r, Float64Array.from(A), Bh, M, N, Kd, false, true, 1, 0, name);
      expectClose(c, r, 1e-5, 1e-5, `gemm ${name}`);
      // a half-precision frozen weight with the f32 LoRA product appended along K (the fused LoRA linear)
      const [A2, B2] = [randF32(M * 16, 7), randF32(N * 16, 8)];
      const args = [M, N, Kd, false, true, 1, 0, name, undefined, undefined, undefined] as const;
      K.gemm(c, A, Bh as never, ...args, A2, B2, 16, false, true);
      refK.gemm(r, Float64Array.from(A), Bh, ...args, Float64Array.from(A2), Float64Array.from(B2), 16, false, true);
      expectClose(c, r, 1e-5, 1e-5, `gemm ${name} + f32 second product`);
    }
    // Every non-NaN half and bfloat16 bit pattern (subnormals, ±inf; -0 sums to +0), k-major and transposed: C = 1·B
    // exactly.
    for (const name of ["f16", "bf16"] as const) {
      const finite = (h: number) =>
        name === "f16" ? (h & 0x7c00) !== 0x7c00 || (h & 0x3ff) === 0 : (h & 0x7f80) !== 0x7f80 || (h & 0x7f) === 0;
      const pats = Uint16Array.from({ length: 65536 }, (_, i) => i).filter((h) => h !== 0x8000 && finite(h));
      const want = Float32Array.from(pats, (h) =>
        name === "f16" ? f16ToF32(h) : new Float32Array(Uint32Array.of(h << 16).buffer)[0],
      );
      for (const tb of [false, true]) {
        const c = new Float32Array(pats.length);
        K.gemm(c, Float32Array.of(1), pats as never, 1, pats.length, 1, false, tb, 1, 0, name);
        expect(bitsEqual(c, want), `${name} widening, transB ${tb}`).toBe(true);
      }
    }
  });

  it("norms, bias, rope forward and backward", () => {
    K.setCpu(path);
    fc.assert(
      fc.property(dim, dim, (M, C) => {
        const x = randF32(M * C, M * 31 + C);
        const w = randF32(C, 3);
        const b = randF32(C, 4);
        const g = randF32(M * C, 5);
        const out = new Float32Array(M * C);
        const rstd = new Float32Array(M);
        const ro = new Float64Array(M * C);
        const rr = new Float64Array(M);
        K.rmsnormFwd(out, rstd, x, w, M, C, 1e-5);
        refK.rmsnormFwd(ro, rr, Float64Array.from(x), Float64Array.from(w), M, C, 1e-5);
        expectClose(out, ro, 1e-5, 1e-6, "rmsnormFwd");
        const dx = new Float32Array(M * C);
        const dw = new Float32Array(C);
        const rdx = new Float64Array(M * C);
        const rdw = new Float64Array(C);
        K.rmsnormBwd(dx, dw, g, x, w, rstd, M, C);
        refK.rmsnormBwd(rdx, rdw, Float64Array.from(g), Float64Array.from(x), Float64Array.from(w), rr, M, C);
        expectClose(dx, rdx, 1e-4, 1e-6, "rmsnormBwd dx");
        expectClose(dw, rdw, 1e-4, 1e-5, "rmsnormBwd dw");

        const mean = new Float32Array(M);
        const rm = new Float64Array(M);
        K.layernormFwd(out, mean, rstd, x, w, b, M, C, 1e-5);
        refK.layernormFwd(ro, rm, rr, Float64Array.from(x), Float64Array.from(w), Float64Array.from(b), M, C, 1e-5);
        expectClose(out, ro, 1e-4, 1e-5, "layernormFwd");
        const db = new Float32Array(C);
        const rdb = new Float64Array(C);
        dw.fill(0);
        rdw.fill(0);
        K.layernormBwd(dx, dw, db, g, x, mean, rstd, w, M, C);
        refK.layernormBwd(
          rdx,
          rdw,
          rdb,
          Float64Array.from(g),
          Float64Array.from(x),
          rm,
          rr,
          Float64Array.from(w),
          M,
          C,
        );
        expectClose(dx, rdx, 1e-3, 1e-5, "layernormBwd dx");
        expectClose(dw, rdw, 1e-4, 1e-5, "layernormBwd dw");
        expectClose(db, rdb, 1e-5, 1e-5, "layernormBwd db");

        const y = x.slice();
        const ry = Float64Array.from(x);
        K.biasAdd(y, b, M, C);
        refK.biasAdd(ry, Float64Array.from(b), M, C);
        expectClose(y, ry, 1e-6, 1e-6, "biasAdd");
        const bg = new Float32Array(C);
        const rbg = new Float64Array(C);
        K.biasGrad(bg, g, M, C);
        refK.biasGrad(rbg, Float64Array.from(g), M, C);
        expectClose(bg, rbg, 1e-5, 1e-5, "biasGrad");
      }),
      runs,
    );
  });

  it("rope: rotate-half and interleaved, partial rotary, inverse, in place; the bits of the scalar loop", () => {
    // [D, R]: the small case; a model head (64); partial rotary whose R/2 leaves a masked tail (24 = 16 + 8 lanes,
    // 12 = 8 + 4 pairs); a head shorter than one vector
    for (const [D, R] of [
      [8, 8],
      [8, 6],
      [64, 64],
      [80, 48],
      [40, 24],
      [4, 2],
    ]) {
      for (const interleaved of [false, true]) {
        for (const inverse of [false, true]) {
          const [B, T, H] = [2, 17, 3];
          const x = randF32(B * T * H * D, 7 + D);
          const cos = randF32((T * R) / 2, 8);
          const sin = randF32((T * R) / 2, 9);
          const o = new Float32Array(x.length);
          const r = new Float64Array(x.length);
          K.setCpu(path);
          K.rope(o, x, cos, sin, B, T, H, D, R, interleaved, inverse);
          const f64 = (a: Float32Array) => Float64Array.from(a);
          refK.rope(r, f64(x), f64(cos), f64(sin), B, T, H, D, R, interleaved, inverse);
          const what = `rope D ${D} R ${R}${interleaved ? " interleaved" : ""}${inverse ? " inverse" : ""}`;
          expectClose(o, r, 1e-5, 1e-6, what);
          const inPlace = x.slice();
          K.rope(inPlace, inPlace, cos, sin, B, T, H, D, R, interleaved, inverse);
          expect(inPlace, `${what} in place`).toEqual(o);
          K.setCpu("scalar");
          const scalar = new Float32Array(x.length);
          K.rope(scalar, x, cos, sin, B, T, H, D, R, interleaved, inverse);
          expect(o, `${what} vs the scalar path`).toEqual(scalar);
        }
      }
    }
    K.setCpu(path);
  });

  it("causal GQA attention forward and backward", () => {
    K.setCpu(path);
    fc.assert(
      fc.property(
        fc.constantFrom(1, 3, 17, 129),
        fc.constantFrom([4, 2], [3, 3], [4, 1]),
        fc.constantFrom(0, 1, 5, 100),
        fc.constantFrom(8, 40, 64),
        (T, [H, KV], win, D) => {
          const B = 2;
          const q = randF32(B * T * H * D, T);
          const k = randF32(B * T * KV * D, T + 1);
          const v = randF32(B * T * KV * D, T + 2);
          const g = randF32(B * T * H * D, T + 3);
          const o = new Float32Array(q.length);
          // NaN where the kernel does not write: the backward below must not read any of it
          const P = new Float32Array(B * H * T * T).fill(Number.NaN);
          const ro = new Float64Array(q.length);
          const rP = new Float64Array(B * H * T * T);
          const f64 = (a: Float32Array) => Float64Array.from(a);
          K.attentionFwd(o, P, q, k, v, B, T, H, KV, D, 0.35, win);
          refK.attentionFwd(ro, rP, f64(q), f64(k), f64(v), B, T, H, KV, D, 0.35, win);
          // the window itself: row t puts its whole mass on keys (t - win, t]
          for (let r = 0; r < B * H * T; r++) {
            const t = r % T;
            let mass = 0;
            for (let s = 0; s < T; s++) {
              const inside = s <= t && (win === 0 || s > t - win);
              if (!inside) expect(rP[r * T + s]).toBe(0);
              else mass += rP[r * T + s];
            }
            expect(Math.abs(mass - 1)).toBeLessThan(1e-12);
          }
          expectClose(o, ro, 1e-5, 1e-5, "attentionFwd");
          // P: each row's keys up to the query itself (the rest of a row is zero by causality and need not be written)
          const causal = (a: Float32Array | Float64Array) => a.filter((_, i) => i % T <= Math.floor(i / T) % T);
          expectClose(causal(P), causal(rP), 1e-5, 1e-6, "attention P");
          const o2 = new Float32Array(q.length);
          K.attentionFwd(o2, null, q, k, v, B, T, H, KV, D, 0.35, win);
          expectClose(o2, ro, 1e-5, 1e-5, "attentionFwd without P");
          const [dq, dk, dv] = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(v.length)];
          const [rq, rk, rv] = [new Float64Array(q.length), new Float64Array(k.length), new Float64Array(v.length)];
          K.attentionBwd(dq, dk, dv, g, q, k, v, P, B, T, H, KV, D, 0.35);
          refK.attentionBwd(rq, rk, rv, f64(g), f64(q), f64(k), f64(v), rP, B, T, H, KV, D, 0.35);
          expectClose(dq, rq, 1e-4, 1e-5, "dq");
          expectClose(dk, rk, 1e-4, 1e-5, "dk");
          expectClose(dv, rv, 1e-4, 1e-5, "dv");
        },
      ),
      { numRuns: 16, seed: 3 },
    );
  });

  it("attention over cached keys (past > 0): the last T rows of the whole causal product", () => {
    K.setCpu(path);
    for (const [past, T, H, KV, D, win] of [
      [1, 1, 4, 2, 8, 0],
      [12, 1, 3, 3, 40, 0],
      [100, 1, 4, 1, 64, 5],
      [5, 17, 4, 2, 64, 0],
      [33, 3, 4, 4, 8, 7],
      [129, 12, 4, 2, 40, 100],
    ]) {
      const B = 2;
      const S = past + T;
      const q = randF32(B * T * H * D, S);
      const k = randF32(B * S * KV * D, S + 1);
      const v = randF32(B * S * KV * D, S + 2);
      const o = new Float32Array(q.length);
      K.attentionFwd(o, null, q, k, v, B, T, H, KV, D, 0.35, win, past);
      const ro = new Float64Array(q.length);
      refK.attentionFwd(
        ro,
        null,
        Float64Array.from(q),
        Float64Array.from(k),
        Float64Array.from(v),
        B,
        T,
        H,
        KV,
        D,
        0.35,
        win,
        past,
      );
      expectClose(o, ro, 1e-5, 1e-5, `attention past ${past} T ${T}`);
      // the same queries placed at positions past.. of a whole (S-long) causal product give the same rows
      const qAll = new Float32Array(B * S * H * D);
      for (let b = 0; b < B; b++) qAll.set(q.subarray(b * T * H * D, (b + 1) * T * H * D), (b * S + past) * H * D);
      const oAll = new Float32Array(qAll.length);
      K.attentionFwd(oAll, null, qAll, k, v, B, S, H, KV, D, 0.35, win);
      for (let b = 0; b < B; b++)
        expect(o.subarray(b * T * H * D, (b + 1) * T * H * D)).toEqual(
          oAll.subarray((b * S + past) * H * D, (b + 1) * S * H * D),
        );
    }
    const P = new Float32Array(1);
    const z = new Float32Array(8);
    expect(() => K.attentionFwd(z, P, z, new Float32Array(16), new Float32Array(16), 1, 1, 1, 1, 8, 1, 0, 1)).toThrow(
      /P must be null/,
    );
  });

  it("attention rows after cached prefixes of their own (attentionFwdRows): attentionFwd over the keys back to back", () => {
    K.setCpu(path);
    for (const [T, H, KV, D, win] of [
      [1, 4, 2, 8, 0],
      [17, 4, 2, 64, 0],
      [3, 4, 4, 8, 7],
      [12, 4, 1, 40, 20],
    ]) {
      const past = Int32Array.of(0, 5, 129, 1, 33);
      const B = past.length;
      const w = KV * D;
      const n = T * H * D;
      const q = randF32(B * n, T + H);
      const k = randF32(B * T * w, T + 1);
      const v = randF32(B * T * w, T + 2);
      // prefixes in arrays of their own, some longer than needed
      const pk = Array.from(past, (p, b) => randF32((p + b) * w, 10 + b));
      const pv = Array.from(past, (p, b) => randF32((p + b) * w, 20 + b));
      const o = new Float32Array(q.length);
      K.attentionFwdRows(o, q, k, v, pk, pv, past, B, T, H, KV, D, 0.35, win);
      const ro = new Float64Array(q.length);
      const f64 = (a: Float32Array) => Float64Array.from(a);
      refK.attentionFwdRows(ro, f64(q), f64(k), f64(v), pk.map(f64), pv.map(f64), past, B, T, H, KV, D, 0.35, win);
      expectClose(o, ro, 1e-5, 1e-5, `attention rows T ${T}`);
      for (let b = 0; b < B; b++) {
        const S = past[b] + T;
        const [kk, vv] = [new Float32Array(S * w), new Float32Array(S * w)];
        kk.set(pk[b].subarray(0, past[b] * w));
        kk.set(k.subarray(b * T * w, (b + 1) * T * w), past[b] * w);
        vv.set(pv[b].subarray(0, past[b] * w));
        vv.set(v.subarray(b * T * w, (b + 1) * T * w), past[b] * w);
        const one = new Float32Array(n);
        K.attentionFwd(one, null, q.subarray(b * n, (b + 1) * n), kk, vv, 1, T, H, KV, D, 0.35, win, past[b]);
        expect(bitsEqual(o.subarray(b * n, (b + 1) * n), one)).toBe(true);
      }
    }
    const z = new Float32Array(8);
    const one = Int32Array.of(1);
    expect(() => K.attentionFwdRows(z, z, z, z, [new Float32Array(4)], [z], one, 1, 1, 1, 1, 8, 1, 0)).toThrow(
      /pk\[0\] holds 4 floats, 1 cached positions need 8/,
    );
    expect(() => K.attentionFwdRows(z, z, z, z, [z, z], [z, z], one, 1, 1, 1, 1, 8, 1, 0)).toThrow(/2 rows, B is 1/);
    const wrong = [new Float64Array(8)] as unknown as Float32Array[];
    expect(() => K.attentionFwdRows(z, z, z, z, [z], wrong, one, 1, 1, 1, 1, 8, 1, 0)).toThrow(
      /pv\[0\] must be a Float32Array/,
    );
  });

  it("activations, SwiGLU, elementwise, mask", () => {
    K.setCpu(path);
    for (const n of [...AWKWARD, 1000, 5000]) {
      const x = randF32(n, n, 3);
      const u = randF32(n, n + 1);
      const g = randF32(n, n + 2);
      for (const kind of ["relu", "gelu", "gelu_tanh", "silu"] as const) {
        const o = new Float32Array(n);
        const r = new Float64Array(n);
        K.actFwd(o, x, kind);
        refK.actFwd(r, Float64Array.from(x), kind);
        expectClose(o, r, 2e-6, 2e-6, `act ${kind}`);
        K.actBwd(o, g, x, kind);
        refK.actBwd(r, Float64Array.from(g), Float64Array.from(x), kind);
        expectClose(o, r, 2e-6, 2e-6, `act' ${kind}`);
      }
      const o = new Float32Array(n);
      const r = new Float64Array(n);
      K.swigluFwd(o, x, u);
      refK.swigluFwd(r, Float64Array.from(x), Float64Array.from(u));
      expectClose(o, r, 2e-6, 2e-6, "swiglu");
      const [dg, du] = [new Float32Array(n), new Float32Array(n)];
      const [rg, ru] = [new Float64Array(n), new Float64Array(n)];
      K.swigluBwd(dg, du, g, x, u);
      refK.swigluBwd(rg, ru, Float64Array.from(g), Float64Array.from(x), Float64Array.from(u));
      expectClose(dg, rg, 2e-6, 2e-6, "swiglu dg");
      expectClose(du, ru, 2e-6, 2e-6, "swiglu du");
      // A fused ISA SwiGLU gives the bits of the generic loops over the same exp: silu(g)·u, d·silu(g), and SiLU's
      // backward of d·u.
      const silu = new Float32Array(n);
      K.actFwd(silu, x, "silu");
      expect(
        bitsEqual(
          o,
          silu.map((s, i) => s * u[i]),
        ),
        "swiglu = silu(g) u",
      ).toBe(true);
      expect(
        bitsEqual(
          du,
          silu.map((s, i) => g[i] * s),
        ),
        "swiglu du = d silu(g)",
      ).toBe(true);
      const dsilu = new Float32Array(n);
      K.actBwd(
        dsilu,
        g.map((d, i) => d * u[i]),
        x,
        "silu",
      );
      expect(bitsEqual(dg, dsilu), "swiglu dg = silu'(g) (d u)").toBe(true);
      for (const op of [0, 1, 2, 3, 4, 5]) {
        const out = g.slice();
        const rout = Float64Array.from(g);
        K.ew(op, out, x, u, 0.5);
        refK.ew(op, rout, Float64Array.from(x), Float64Array.from(u), 0.5);
        expectClose(out, rout, 1e-6, 1e-6, `ew ${op}`);
      }
      const mask = Uint8Array.from(x, (v) => (v > 0 ? 1 : 0));
      const w = u.slice();
      K.maskApply(w, mask);
      for (let i = 0; i < n; i++) expect(w[i]).toBe(mask[i] ? u[i] : 0);
      for (const base of [u, null]) {
        const [out, rout] = [new Float32Array(n), new Float32Array(n)];
        K.maskedScaleAdd(out, base, x, mask, 1.7);
        refK.maskedScaleAdd(rout, base, x, mask, 1.7);
        expect(Array.from(out)).toEqual(Array.from(rout));
      }
      for (const cols of [1, 7, 129]) {
        const rows = Math.floor(n / cols);
        const [c, rc] = [new Float64Array(cols).fill(0.25), new Float64Array(cols).fill(0.25)];
        K.colSumsq(c, x.subarray(0, rows * cols), rows, cols);
        refK.colSumsq(rc, x.subarray(0, rows * cols), rows, cols);
        expect(Array.from(c)).toEqual(Array.from(rc));
      }
    }
  });

  it("fused cross-entropy with ignore index, gradient aliasing the logits", () => {
    K.setCpu(path);
    for (const [M, V] of [
      [1, 3],
      [17, 33],
      [33, 1000],
    ]) {
      const logits = randF32(M * V, M + V, 3);
      const t = Int32Array.from({ length: M }, (_, i) => (i % 5 === 4 ? -100 : (i * 7) % V));
      const loss = new Float32Array(M);
      const d = new Float32Array(M * V);
      const rl = new Float64Array(M);
      const rd = new Float64Array(M * V);
      K.xent(loss, d, logits, t, M, V, -100, 0.5);
      refK.xent(rl, rd, Float64Array.from(logits), t, M, V, -100, 0.5);
      expectClose(loss, rl, 1e-5, 1e-5, "xent loss");
      expectClose(d, rd, 1e-5, 1e-7, "xent grad");
      const alias = logits.slice();
      K.xent(loss, alias, alias, t, M, V, -100, 0.5);
      expect(bitsEqual(alias, d)).toBe(true);
    }
  });

  it("row log-sum-exp and argmax (zero-shot scoring), NaN rows and ties", () => {
    K.setCpu(path);
    for (const [M, V] of [
      [1, 1],
      [3, 17],
      [17, 33],
      [5, 32000],
    ]) {
      const x = randF32(M * V, M + V, 8);
      if (V > 3) x[V + 2] = x[V + 1] = 50; // row 1: a tie, the first index wins
      const [out, rout] = [new Float64Array(M), new Float64Array(M)];
      const [am, ram] = [new Int32Array(M), new Int32Array(M)];
      K.rowLogsumexp(out, am, x, M, V);
      refK.rowLogsumexp(rout, ram, x, M, V);
      expectClose(out, rout, 1e-6, 1e-6, "logsumexp");
      expect(Array.from(am)).toEqual(Array.from(ram));
    }
    const nan = Float32Array.of(1, Number.NaN, 3);
    const [o, a] = [new Float64Array(1), new Int32Array(1)];
    K.rowLogsumexp(o, a, nan, 1, 3);
    expect(Number.isNaN(o[0])).toBe(true);
    expect(a[0]).toBe(2);
    expect(() => K.rowLogsumexp(o, a, nan, 1, 4)).toThrow();
  });

  it("AdamW step", () => {
    K.setCpu(path);
    const n = 1000;
    const p = randF32(n, 1);
    const g = randF32(n, 2);
    const [m, v] = [randF32(n, 3, 0.1), randF32(n, 4, 0.1).map(Math.abs)];
    const rp = Float64Array.from(p);
    const [rm, rv] = [Float64Array.from(m), Float64Array.from(v)];
    expect(K.adamw(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.1, 3)).toBe(0);
    refK.adamw(rp, Float64Array.from(g), rm, rv, 1e-3, 0.9, 0.999, 1e-8, 0.1, 3);
    expectClose(p, rp, 1e-6, 1e-7, "adamw p");
    expectClose(m, rm, 1e-6, 1e-7, "adamw m");
    expectClose(v, rv, 1e-6, 1e-7, "adamw v");
  });
});

describe("selection and linear algebra", () => {
  it("top-k pruning: exactly k zeros per scope, ties to the lower index, same as the TS twin", () => {
    fc.assert(
      fc.property(dim, dim, fc.double({ min: 0, max: 0.99, noNaN: true }), fc.boolean(), (rows, cols, s, perRow) => {
        const scores = randF32(rows * cols, rows * cols).map((v) => Math.round(v * 4) / 4); // many ties
        const n = perRow ? cols : rows * cols;
        const k = Math.round(s * n);
        const m = new Uint8Array(rows * cols);
        const r = new Uint8Array(rows * cols);
        K.topkPrune(m, scores, rows, cols, k, perRow);
        refK.topkPrune(r, scores, rows, cols, k, perRow);
        expect(Array.from(m)).toEqual(Array.from(r));
        if (perRow)
          for (let i = 0; i < rows; i++) expect(m.subarray(i * cols, (i + 1) * cols).filter((v) => !v).length).toBe(k);
        else expect(m.filter((v) => !v).length).toBe(k);
      }),
      { numRuns: 30, seed: 5 },
    );
  });

  it("N:M keeps exactly N of every M", () => {
    for (const [n, m] of [
      [2, 4],
      [4, 8],
      [1, 4],
    ]) {
      const [rows, cols] = [17, 64];
      const s = randF32(rows * cols, n * m);
      const mask = new Uint8Array(rows * cols);
      const r = new Uint8Array(rows * cols);
      K.nmKeep(mask, s, rows, cols, n, m);
      refK.nmKeep(r, s, rows, cols, n, m);
      expect(Array.from(mask)).toEqual(Array.from(r));
      for (let g = 0; g < rows * cols; g += m) expect(mask.subarray(g, g + m).reduce((a, b) => a + b, 0)).toBe(n);
    }
  });

  it("Cholesky and triangular inverse against the TS twins (blocked sizes)", () => {
    for (const n of [1, 3, 17, 65, 129, 200, 300]) {
      const X = randF32(n * (n + 5), n);
      const H = new Float32Array(n * n);
      K.gemm(H, X, X, n, n, n + 5, false, true, 1, 0);
      for (let i = 0; i < n; i++) H[i * n + i] += 0.1 * n;
      const L = H.slice();
      const rL = Float64Array.from(H);
      expect(K.cholesky(L, n)).toBe(0);
      expect(refK.cholesky(rL, n)).toBe(0);
      expectClose(L, rL, 1e-4, 1e-5, `cholesky ${n}`);
      const inv = new Float32Array(n * n);
      const rinv = new Float64Array(n * n);
      K.trtriLower(inv, L, n);
      refK.trtriLower(rinv, rL, n);
      expectClose(inv, rinv, 1e-3, 1e-5, `trtri ${n}`);
    }
  });

  it("Cholesky reports a non-positive-definite pivot", () => {
    const a = Float32Array.from([4, 2, 0, 2, 1, 0, 0, 0, 1]); // rank-deficient leading 2x2
    expect(K.cholesky(a, 3)).toBe(2);
    expect(refK.cholesky(Float64Array.from([4, 2, 0, 2, 1, 0, 0, 0, 1]), 3)).toBe(2);
  });
});

describe("AdamW across CPU paths", () => {
  it.skipIf(!isNative)("every path gives the same bits, and a non-finite gradient anywhere changes nothing", () => {
    const n = 1037;
    const outs = paths.map((path) => {
      K.setCpu(path);
      const p = randF32(n, 1);
      const m = randF32(n, 3, 0.1);
      const v = randF32(n, 4, 0.1).map(Math.abs);
      expect(K.adamw(p, randF32(n, 2), m, v, 1e-3, 0.9, 0.999, 1e-8, 0.1, 3)).toBe(0);
      const g = randF32(n, 2);
      g[1030] = Number.NaN;
      g[17] = Number.POSITIVE_INFINITY;
      const p0 = p.slice();
      expect(K.adamw(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.1, 4)).toBe(2);
      expect(bitsEqual(p, p0)).toBe(true);
      return p;
    });
    K.setCpu(initial);
    for (const o of outs) expect(bitsEqual(o, outs[0])).toBe(true);
  });
});

describe("threads", () => {
  it.skipIf(!isNative)("same thread count → same bits; 1 vs 2 threads agree", () => {
    const before = K.threads();
    const [M, N, Kd] = [129, 200, 333];
    const A = randF32(M * Kd, 1);
    const B = randF32(Kd * N, 2);
    const run = (t: number) => {
      K.setThreads(t);
      const c = new Float32Array(M * N);
      K.gemm(c, A, B, M, N, Kd, false, false, 1, 0);
      const [T, H, KV, D] = [65, 4, 2, 16];
      const q = randF32(T * H * D, 3);
      const k = randF32(T * KV * D, 4);
      const o = new Float32Array(q.length);
      K.attentionFwd(o, null, q, k, k, 1, T, H, KV, D, 0.25);
      // with P, and the backward (work split by KV head, dK/dV summed over the group's query heads)
      const P = new Float32Array(H * T * T);
      const o2 = new Float32Array(q.length);
      K.attentionFwd(o2, P, q, k, k, 1, T, H, KV, D, 0.25);
      const [dq, dk, dv] = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(k.length)];
      K.attentionBwd(dq, dk, dv, randF32(q.length, 7), q, k, k, P, 1, T, H, KV, D, 0.25);
      const x = randF32(M * N, 5);
      const rs = new Float32Array(M * N);
      const dw = new Float32Array(N);
      K.rmsnormFwd(rs, null, x, randF32(N, 6), M, N, 1e-5);
      const rstd = new Float32Array(M).fill(1);
      K.rmsnormBwd(null, dw, x, x, randF32(N, 6), rstd, M, N);
      // norm and bias gradients: per-column sums over rows, in fixed row chunks
      const [lw, lb, bg] = [new Float32Array(N), new Float32Array(N), new Float32Array(N)];
      K.layernormBwd(null, lw, lb, x, x, new Float32Array(M).fill(0.1), rstd, randF32(N, 8), M, N);
      K.biasGrad(bg, x, M, N);
      return [c, o, o2, dq, dk, dv, rs, dw, lw, lb, bg];
    };
    const a1 = run(1);
    const a2 = run(2);
    const b2 = run(2);
    for (let i = 0; i < a1.length; i++) {
      expect(bitsEqual(a2[i], b2[i])).toBe(true);
      expectClose(a1[i], a2[i], 1e-6, 1e-7, "1 vs 2 threads");
    }
    K.setThreads(before);
  });

  it.skipIf(!isNative)("the default thread count: the affinity mask, capped by a cgroup CPU quota (v2 and v1)", () => {
    const root = mkdtempSync(join(tmpdir(), "perp-cgroup-"));
    try {
      const none = K.usableCpus(root); // no quota files: the affinity mask alone
      expect(none).toBeGreaterThanOrEqual(1);
      const v2 = (text: string) => {
        writeFileSync(join(root, "cpu.max"), text);
        return K.usableCpus(root);
      };
      expect(v2("max 100000\n")).toBe(none);
      expect(v2("50000 100000\n")).toBe(1); // half a CPU: one thread
      expect(v2("150000 100000\n")).toBe(Math.min(none, 2)); // rounded up
      expect(v2("100000000 100000\n")).toBe(none); // a quota above the mask changes nothing
      expect(v2("garbage\n")).toBe(none);
      rmSync(join(root, "cpu.max"));
      mkdirSync(join(root, "cpu"));
      writeFileSync(join(root, "cpu", "cpu.cfs_period_us"), "100000\n");
      writeFileSync(join(root, "cpu", "cpu.cfs_quota_us"), "-1\n");
      expect(K.usableCpus(root)).toBe(none);
      writeFileSync(join(root, "cpu", "cpu.cfs_quota_us"), "80000\n");
      expect(K.usableCpus(root)).toBe(1);
      expect(() => K.usableCpus(3 as unknown as string)).toThrow(/usableCpus: cgroupRoot must be a string/);
      // without PERP_THREADS a fresh process sizes its pool from the real cgroup root
      const nativePath = fileURLToPath(new URL("../build/Release/perp_native.node", import.meta.url));
      const env = { ...process.env };
      delete env.PERP_THREADS;
      const out = execFileSync(
        process.execPath,
        ["-e", `const K = require(${JSON.stringify(nativePath)}); console.log(K.threads(), K.usableCpus())`],
        { env, encoding: "utf8" },
      ).trim();
      const [threads, usable] = out.split(" ").map(Number);
      expect(threads).toBe(usable);
      expect(usable).toBeLessThanOrEqual(cpus().length);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
