// Pruning: exact mask counts per scope, N:M structure, SparseGPT vs a direct float64 implementation, Wanda = magnitude
// under equal input norms, the sequential block loop on tiny models, the saved folder, and bad input.
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { evalText } from "../src/io/datasets.js";
import type { Tokenizer } from "../src/io/tokenizer.js";
import { loadModel } from "../src/models/load.js";
import { noGrad } from "../src/nn/tape.js";
import { calibrationWindows } from "../src/prune/calibration.js";
import { prune, readMasks, savePruned } from "../src/prune/index.js";
import { inspect } from "../src/prune/inspect.js";
import { countZeros, isNM, selectMask } from "../src/prune/mask.js";
import { magnitude, wanda } from "../src/prune/methods.js";
import { pruneSequential } from "../src/prune/sequential.js";
import { hinvUpper, sparsegptPrune } from "../src/prune/sparsegpt.js";
import { gramLower, symmetrize } from "../src/tensor/linalg.js";
import { K } from "../src/tensor/native.js";
import { PyRandom } from "../src/tensor/pyrandom.js";
import { Rng } from "../src/tensor/rng.js";
import { Tensor } from "../src/tensor/tensor.js";
import { TOK, writeTinyLlama } from "./fixtures.js";
import { randF32 } from "./helpers.js";

describe("mask selection", () => {
  it("exactly round(s·n) zeros per scope; N:M keeps exactly N of every M", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 3, 17, 33),
        fc.constantFrom(8, 16, 24),
        fc.double({ min: 0, max: 0.95, noNaN: true }),
        (rows, cols, s) => {
          const sc = randF32(rows * cols, rows + cols).map(Math.abs);
          const m = selectMask(sc, rows, cols, s, "matrix", null);
          expect(countZeros(m)).toBe(Math.round(s * rows * cols));
          const r = selectMask(sc, rows, cols, s, "row", null);
          for (let i = 0; i < rows; i++)
            expect(countZeros(r.subarray(i * cols, (i + 1) * cols))).toBe(Math.round(s * cols));
          for (const [n, mm] of [
            [2, 4],
            [4, 8],
          ]) {
            const k = selectMask(sc, rows, cols, 0, "row", { n, m: mm });
            for (let g = 0; g < k.length; g += mm) expect(k.subarray(g, g + mm).reduce((a, b) => a + b, 0)).toBe(n);
            expect(
              isNM(
                sc.map((v, i) => (k[i] ? v + 1 : 0)),
                rows,
                cols,
                { n, m: mm },
              ),
            ).toBe(true);
          }
        },
      ),
      { numRuns: 25, seed: 9 },
    );
  });

  it("Wanda equals magnitude when every input channel has the same norm", () => {
    const [rows, cols] = [17, 32];
    const W = randF32(rows * cols, 1);
    const spec = { sparsity: 0.5, nm: null, scope: "row" as const };
    const colsq = new Float64Array(cols).fill(3.7);
    const a = wanda.prune(W, rows, cols, spec, { colsq, tokens: 10 }, new Rng(0), "l");
    const b = magnitude.prune(W, rows, cols, spec, null, new Rng(0), "l");
    expect(Array.from(a.mask)).toEqual(Array.from(b.mask));
    const nm = { ...spec, nm: { n: 2, m: 4 } };
    expect(Array.from(wanda.prune(W, rows, cols, nm, { colsq, tokens: 1 }, new Rng(0), "l").mask)).toEqual(
      Array.from(magnitude.prune(W, rows, cols, nm, null, new Rng(0), "l").mask),
    );
  });
});

// ----------------------------------------------------------------------------------- SparseGPT, float64 reference
function cholLower(A: number[][]): number[][] {
  const n = A.length;
  const L = A.map(() => new Array(n).fill(0));
  for (let j = 0; j < n; j++) {
    let s = A[j][j];
    for (let p = 0; p < j; p++) s -= L[j][p] ** 2;
    L[j][j] = Math.sqrt(s);
    for (let i = j + 1; i < n; i++) {
      let t = A[i][j];
      for (let p = 0; p < j; p++) t -= L[i][p] * L[j][p];
      L[i][j] = t / L[j][j];
    }
  }
  return L;
}

function invSPD(A: number[][]): number[][] {
  const n = A.length;
  const L = cholLower(A);
  const Li = A.map(() => new Array(n).fill(0));
  for (let j = 0; j < n; j++)
    for (let i = j; i < n; i++) {
      let s = i === j ? 1 : 0;
      for (let p = j; p < i; p++) s -= L[i][p] * Li[p][j];
      Li[i][j] = s / L[i][i];
    }
  return A.map((_, i) => A.map((__, j) => Li.reduce((s, row) => s + row[i] * row[j], 0)));
}

/** Direct float64 transcription of fasterprune (unstructured, exact-count block masks, as perp documents). */
function sparsegpt64(
  W0: Float32Array,
  rows: number,
  cols: number,
  X: Float32Array,
  n: number,
  s: number,
  bs: number,
): Float64Array {
  const W = Array.from({ length: rows }, (_, r) => Array.from(W0.subarray(r * cols, (r + 1) * cols)));
  const H = Array.from({ length: cols }, (_, i) =>
    Array.from({ length: cols }, (_, j) => {
      let a = 0;
      for (let t = 0; t < n; t++) a += X[t * cols + i] * X[t * cols + j];
      return (2 / n) * a;
    }),
  );
  const mean = H.reduce((a, row, i) => a + row[i], 0) / cols;
  for (let i = 0; i < cols; i++) H[i][i] += 0.01 * mean;
  const Lu = cholLower(invSPD(H));
  const U = (i: number, j: number) => Lu[j][i];
  for (let i1 = 0; i1 < cols; i1 += bs) {
    const i2 = Math.min(i1 + bs, cols);
    const tmp: [number, number, number][] = [];
    for (let r = 0; r < rows; r++)
      for (let i = i1; i < i2; i++) tmp.push([W[r][i] ** 2 / U(i, i) ** 2, r * (i2 - i1) + (i - i1), r]);
    tmp.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const pruned = new Set(tmp.slice(0, Math.round(s * tmp.length)).map((t) => t[1]));
    const Err = Array.from({ length: rows }, () => new Array(i2 - i1).fill(0));
    for (let i = i1; i < i2; i++)
      for (let r = 0; r < rows; r++) {
        const w = W[r][i];
        const q = pruned.has(r * (i2 - i1) + (i - i1)) ? 0 : w;
        const e = (w - q) / U(i, i);
        for (let j = i; j < i2; j++) W[r][j] -= e * U(i, j);
        W[r][i] = q;
        Err[r][i - i1] = e;
      }
    for (let r = 0; r < rows; r++)
      for (let j = i2; j < cols; j++) for (let i = i1; i < i2; i++) W[r][j] -= Err[r][i - i1] * U(i, j);
  }
  return Float64Array.from(W.flat());
}

describe("calibration draws", () => {
  it("are CPython's random: seed, randint and getrandbits give the interpreter's numbers", () => {
    // from CPython 3.11: random.seed(7); [random.randint(0, 1999) for _ in range(6)], ...
    const r = new PyRandom(7);
    expect(Array.from({ length: 6 }, () => r.randint(0, 1999))).toEqual([663, 1941, 308, 808, 1333, 98]);
    expect(Array.from({ length: 3 }, () => r.randint(0, 99999))).toEqual([9494, 70239, 12337]);
    expect(r.getrandbits(32)).toBe(1570621944);
    expect(new PyRandom(-7).randint(0, 1999)).toBe(663); // seeds by absolute value
    const big = new PyRandom(2 ** 40 + 3); // two 32-bit key words
    expect(Array.from({ length: 8 }, () => big.randint(1, 6))).toEqual([2, 1, 5, 1, 5, 3, 6, 4]);
  });
});

describe("SparseGPT", () => {
  it("matches a direct float64 implementation of the same algorithm on a small layer", () => {
    const [rows, cols, n, bs] = [6, 20, 64, 8];
    const W = randF32(rows * cols, 2);
    const X = randF32(n * cols, 3);
    const xtx = new Float32Array(cols * cols);
    K.gemm(xtx, X, X, cols, cols, n, true, false, 1, 0);
    const out = sparsegptPrune(W, rows, cols, xtx, n, { sparsity: 0.5, nm: null, scope: "matrix" }, "t", {
      blocksize: bs,
    });
    const ref = sparsegpt64(W, rows, cols, X, n, 0.5, bs);
    for (let i = 0; i < W.length; i++) {
      expect(out.W[i] === 0).toBe(ref[i] === 0);
      expect(Math.abs(out.W[i] - ref[i])).toBeLessThan(2e-4 * (1 + Math.abs(ref[i])));
    }
    expect(countZeros(out.mask)).toBe(rows * cols * 0.5);
    // N:M: the pattern holds and the reconstruction error is below plain magnitude 2:4
    const nm = sparsegptPrune(W, rows, cols, xtx, n, { sparsity: 0.5, nm: { n: 2, m: 4 }, scope: "matrix" }, "t", {
      blocksize: bs,
    });
    expect(isNM(nm.W, rows, cols, { n: 2, m: 4 })).toBe(true);
  });

  it("the calibration Gram matrix: lower-triangle blocks bit for bit the full XᵀX, symmetrized; upper triangle unread", () => {
    for (const [n, cols] of [
      [77, 300],
      [33, 256],
      [5, 17],
    ]) {
      const X = randF32(n * cols, cols);
      const full = new Float32Array(cols * cols);
      K.gemm(full, X, X, cols, cols, n, true, false, 1, 0);
      const low = gramLower(X, n, cols);
      for (let i = 0; i < cols; i++) for (let j = 0; j <= i; j++) expect(low[i * cols + j]).toBe(full[i * cols + j]);
      expect(Array.from(symmetrize(low.slice(), cols))).toEqual(Array.from(full));
    }
    // sparsegptPrune reads only the lower triangle
    const [rows, cols, n] = [4, 12, 40];
    const W = randF32(rows * cols, 5);
    const X = randF32(n * cols, 6);
    const xtx = new Float32Array(cols * cols);
    K.gemm(xtx, X, X, cols, cols, n, true, false, 1, 0);
    const spec = { sparsity: 0.5, nm: null, scope: "matrix" } as const;
    const a = sparsegptPrune(W, rows, cols, xtx, n, spec, "t");
    const junk = xtx.slice();
    for (let i = 0; i < cols; i++) for (let j = i + 1; j < cols; j++) junk[i * cols + j] = 1e9;
    expect(Array.from(sparsegptPrune(W, rows, cols, junk, n, spec, "t").W)).toEqual(Array.from(a.W));
  });

  it("a Hessian that stays indefinite after dampening retries then names the layer", () => {
    const H = Float32Array.of(1, 0, 0, -5);
    expect(() => hinvUpper(H, 2, 0.01, "model.layers.3.mlp.up_proj")).toThrow(
      /model.layers.3.mlp.up_proj: the calibration Hessian is not positive definite/,
    );
    const dead = sparsegptPrune(
      randF32(8, 1),
      2,
      4,
      new Float32Array(16),
      10,
      { sparsity: 0.5, nm: null, scope: "matrix" },
      "d",
    );
    expect(dead.info?.dead).toBe(4);
  });
});

// ----------------------------------------------------------------------------------- the block loop on tiny models

describe.skipIf(!existsSync(TOK))("sequential pruning of a tiny LLaMA", () => {
  const src = mkdtempSync(join(tmpdir(), "perp-pr-"));
  writeTinyLlama(src, { kv: 2, seed: 1 });

  for (const method of ["magnitude", "random", "wanda", "sparsegpt"])
    for (const pattern of ["unstructured", "2:4"])
      it(`${method} ${pattern}: exact sparsity, masks saved, folder reloads with exact zeros`, async () => {
        const m = await loadModel(src);
        const { report, masks } = await prune(m, {
          method,
          sparsity: 0.5,
          pattern,
          calibSamples: 4,
          calibSeqlen: 32,
          seed: 1,
        });
        expect(report.layers).toHaveLength(14);
        expect(report.sparsity).toBeCloseTo(0.5, 10);
        const out = join(mkdtempSync(join(tmpdir(), "perp-pro-")), "pruned");
        savePruned(out, m, report, masks);
        const r = await inspect(out);
        expect(r.sparsity).toBeCloseTo(0.5, 10);
        expect(r.masks_hold).toBe(true);
        if (pattern === "2:4") expect(r.layers.every((l) => l.nm === "2:4")).toBe(true);
        expect(readMasks(out)?.size).toBe(14);
        expect(r.parameters.prunable).toBe(2 * (16 * 16 * 2 + 8 * 16 * 2 + 32 * 16 * 3));
      });

  it("sequential: block i is calibrated on the outputs of the pruned blocks < i (an independent loop agrees)", async () => {
    // four blocks, one window per forward: the block outputs' buffers and the arena's are reused over and over
    const dir = mkdtempSync(join(tmpdir(), "perp-pr4-"));
    writeTinyLlama(dir, { kv: 2, seed: 4, layers: 4 });
    const m = await loadModel(dir);
    const spec = { sparsity: 0.5, nm: null, scope: "row" as const };
    const cal = await calibrationWindows(m.tokenizer as Tokenizer, { samples: 3, seqlen: 32, seed: 2, source: "c4" });
    const got = pruneSequential(m.model, { method: wanda, spec, seed: 0, calibration: cal, batch: 1 }).masks;
    // the reference's loop: all windows in one forward per block, statistics from hooks, prune, re-run
    const ref = (await loadModel(dir)).model;
    let X = noGrad(() => ref.embed(cal.ids, 3, 32)).data;
    for (let i = 0; i < 4; i++) {
      const lins = ref.blockLinears(i);
      const colsq = new Map<string, Float64Array>();
      for (const [name, lin] of lins)
        lin.inputHook = (x) => {
          const cols = lin.weight.shape[1];
          const c = new Float64Array(cols);
          for (let r = 0; r < x.size / cols; r++) for (let j = 0; j < cols; j++) c[j] += x.data[r * cols + j] ** 2;
          colsq.set(name, c);
        };
      noGrad(() => ref.runBlock(i, new Tensor(X.slice(), [96, 16]), 3, 32));
      for (const [name, lin] of lins) {
        lin.inputHook = null;
        const [rows, cols] = lin.weight.shape;
        const r = wanda.prune(
          lin.weight.data,
          rows,
          cols,
          spec,
          { tokens: 96, colsq: colsq.get(name) },
          new Rng(0),
          name,
        );
        expect(Array.from(got.get(`${name}.weight`) as Uint8Array), name).toEqual(Array.from(r.mask));
        lin.weight.data = r.W;
      }
      X = noGrad(() => ref.runBlock(i, new Tensor(X.slice(), [96, 16]), 3, 32)).data;
    }
  });

  it("is deterministic for a seed; calibration windows come from C4", async () => {
    const run = async () => {
      const m = await loadModel(src);
      await prune(m, { method: "wanda", sparsity: 0.5, calibSamples: 3, calibSeqlen: 32, seed: 5 });
      return m.model.blockLinears(1)[6][1].weight.data.slice();
    };
    expect(Array.from(await run())).toEqual(Array.from(await run()));
  });

  it("calibration from a continuous text (tinystories, wikitext2, .txt) draws get_wikitext2's windows from its token stream", async () => {
    const m = await loadModel(src);
    const tok = m.tokenizer as Tokenizer;
    const text = await evalText("tinystories");
    // every story is shorter than a window: per-document draws (get_c4's) find none
    expect(Math.max(...text.split(/\n\s*\n/).map((d) => tok.encode(d).length))).toBeLessThan(512);
    const cal = await calibrationWindows(tok, { samples: 3, seqlen: 512, seed: 0, source: "tinystories" });
    const ids = tok.encode(text);
    expect(ids.length).toBe(393019);
    // CPython 3.11: random.seed(0); [random.randint(0, 393019 - 512 - 1) for _ in range(3)]
    expect(cal.starts).toEqual([201979, 220500, 21225]);
    expect(cal.docIndices).toEqual([]);
    for (const [i, s] of (cal.starts as number[]).entries())
      expect(Array.from(cal.ids.subarray(i * 512, (i + 1) * 512))).toEqual(ids.slice(s, s + 512));
    // a .txt file is one continuous text too, however short its paragraphs
    const f = join(mkdtempSync(join(tmpdir(), "perp-cal-")), "short.txt");
    writeFileSync(f, Array.from({ length: 40 }, (_, i) => `Line ${i} of a text.`).join("\n\n"));
    const n = tok.encode(readFileSync(f, "utf8")).length;
    const c = await calibrationWindows(tok, { samples: 4, seqlen: n - 1, seed: 3, source: f });
    expect(c.starts?.every((s) => s === 0)).toBe(true); // randint(0, 0)
    await expect(calibrationWindows(tok, { samples: 1, seqlen: n, seed: 0, source: f })).rejects.toThrow(
      new RegExp(`has ${n} tokens, fewer than a window needs \\(seqlen \\+ 1 = ${n + 1}\\)`),
    );
    // a path that exists but is no readable text: a clear error
    await expect(calibrationWindows(tok, { samples: 1, seqlen: 8, seed: 0, source: tmpdir() })).rejects.toThrow(
      /: cannot read \(EISDIR/,
    );
    const r = await prune(m, { method: "wanda", sparsity: 0.5, calibSamples: 2, calibSeqlen: 64, calibDataset: f });
    expect(r.report.calibration).toMatchObject({ dataset: f, samples: 2, seqlen: 64 });
    expect(r.report.calibration?.token_starts).toHaveLength(2);
    expect(r.report.calibration?.documents).toBeUndefined();
  });

  it("bad input: sparsity, N:M, divisibility, short calibration data, existing output", async () => {
    const m = await loadModel(src);
    await expect(prune(m, { method: "magnitude", sparsity: 1 })).rejects.toThrow(/sparsity must be in \[0, 1\)/);
    await expect(prune(m, { method: "magnitude", sparsity: -0.1 })).rejects.toThrow(/sparsity must be in/);
    await expect(prune(m, { method: "magnitude", sparsity: 0.5, pattern: "4:4" })).rejects.toThrow(/1 <= N < M/);
    await expect(prune(m, { method: "magnitude", sparsity: 0.5, pattern: "2:5" })).rejects.toThrow(
      /^model\.layers\.0\.self_attn\.q_proj: input dimension \d+ is not divisible by M=5/, // names the layer
    );
    await expect(prune(m, { method: "obs", sparsity: 0.5 })).rejects.toThrow(
      /unknown pruning method 'obs' \(available: magnitude/,
    );
    await expect(prune(m, { method: "wanda", sparsity: 0.5, calibSamples: 2, calibSeqlen: 100000 })).rejects.toThrow(
      /calib-seqlen 100000 exceeds the model's context/,
    );
    await expect(
      calibrationWindows(m.tokenizer as Tokenizer, { samples: 2, seqlen: 100000, seed: 0, source: "c4" }),
    ).rejects.toThrow(/no document longer than 100000 tokens/);
    const out = mkdtempSync(join(tmpdir(), "perp-exists-"));
    writeFileSync(join(out, "keep.txt"), "x");
    const r = await prune(m, { method: "magnitude", sparsity: 0.5 });
    expect(() => savePruned(out, m, r.report, r.masks)).toThrow(/already exists and is not empty/);
    expect(readdirSync(out)).toEqual(["keep.txt"]);
  });
});
