// Bad input: the addon throws a JS error naming the op and the problem, never crashes the process.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as F from "../src/nn/functional.js";
import { AdamW } from "../src/nn/optim.js";
import { newF32 } from "../src/tensor/arena.js";
import { isNative, K } from "../src/tensor/native.js";
import { Tensor } from "../src/tensor/tensor.js";

// Transparent huge pages offered to madvise (Linux with THP "always" or "madvise" selected).
function thpAvailable(): boolean {
  try {
    return /\[(always|madvise)\]/.test(readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8"));
  } catch {
    return false;
  }
}

describe.skipIf(!isNative)("native argument checks", () => {
  it("gemmPack and a pre-packed B: clear errors; a pack that does not fit the call is ignored", () => {
    expect(() => K.gemmPack(new Float32Array(5), 2, 3, false, "f32", 0)).toThrow(/gemmPack: B has length 5/);
    expect(() => K.gemmPack(new Float32Array(6), 2, 3, false, "int8" as never, 0)).toThrow(/gemmPack: btype/);
    expect(() => K.gemmPack(new Float32Array(6), -2, 3, false, "f32", 0)).toThrow(/K must be a non-negative/);
    expect(() => K.gemmPack(new Float32Array(6), 2, 3, false, "bf16", 0)).toThrow(/B must be a Uint16Array/);
    const u = undefined;
    const [A, B] = [new Float32Array(6).fill(1), new Float32Array(6).fill(2)];
    const c = new Float32Array(4);
    expect(() =>
      K.gemm(c, A, B, 2, 2, 3, false, false, 1, 0, "f32", u, u, u, u, u, 0, false, false, [1] as never),
    ).toThrow(/gemm: packed must be a Float32Array/);
    // garbage or a pack of another shape: not used, the result is still right
    for (const pk of [
      new Float32Array(3),
      K.gemmPack(B, 3, 2, false, "f32", 0).fill(9),
      K.gemmPack(B, 2, 3, false, "f32", 0),
    ]) {
      c.fill(0);
      K.gemm(c, A, B, 2, 2, 3, false, false, 1, 0, "f32", u, u, u, u, u, 0, false, false, pk);
      expect(Array.from(c)).toEqual([6, 6, 6, 6]);
    }
  });

  it("gemmBlocking: values that would make the pack buffers unallocatable are refused, the blocking kept", () => {
    const before = K.gemmBlocking();
    expect(() => K.gemmBlocking(5000)).toThrow(/gemmBlocking: kc must be at most 4096/);
    expect(() => K.gemmBlocking(0, 20000)).toThrow(/gemmBlocking: nc must be at most 16384/);
    expect(() => K.gemmBlocking(0, 0, 600)).toThrow(/gemmBlocking: mcp must be at most 512/);
    expect(() => K.gemmBlocking(0, 0, 0, 2000)).toThrow(/gemmBlocking: jg must be at most 1024/);
    expect(() => K.gemmBlocking(0, 0, 0, -1)).toThrow(/gemmBlocking: jg must be a non-negative integer/);
    const after = K.gemmBlocking();
    expect([after.kc, after.nc, after.mcp, after.jg]).toEqual([before.kc, before.nc, before.mcp, before.jg]);
    // column blocks are whole 32-wide panels (a narrower one overflowed its pack buffer)
    expect(K.gemmBlocking(0, 1).nc).toBe(32);
    expect(K.gemmBlocking(0, -1).nc).toBe(before.nc);
  });

  it("gemm: wrong lengths, wrong types, bad dims", () => {
    const a = new Float32Array(6);
    expect(() => K.gemm(new Float32Array(4), a, new Float32Array(6), 2, 2, 3, false, false, 1, 0)).not.toThrow();
    expect(() => K.gemm(new Float32Array(3), a, new Float32Array(6), 2, 2, 3, false, false, 1, 0)).toThrow(
      /gemm: C has length 3, expected at least 4/,
    );
    expect(() => K.gemm(new Float32Array(4), a, new Float32Array(5), 2, 2, 3, false, false, 1, 0)).toThrow(/gemm: B/);
    expect(() => K.gemm(new Float32Array(4), [1, 2] as never, a, 2, 2, 3, false, false, 1, 0)).toThrow(
      /A must be a Float32Array/,
    );
    expect(() => K.gemm(new Float32Array(4), a, a, -2, 2, 3, false, false, 1, 0)).toThrow(/M must be a non-negative/);
    expect(() => K.gemm(new Float32Array(4), a, a, 2, 2, 3, false, false, 1, 0, "int8" as never)).toThrow(/btype/);
    // the second product appended along K (fused LoRA): its operands are checked too, and C is left untouched
    const c = new Float32Array(4).fill(7);
    const k2 = (A2: Float32Array, B2: Float32Array, K2: number) =>
      K.gemm(
        c,
        a,
        new Float32Array(6),
        2,
        2,
        3,
        false,
        false,
        1,
        0,
        "f32",
        undefined,
        undefined,
        undefined,
        A2,
        B2,
        K2,
      );
    expect(() => k2(new Float32Array(3), new Float32Array(4), 2)).toThrow(/gemm: A2 has length 3, expected at least 4/);
    expect(() => k2(new Float32Array(4), new Float32Array(3), 2)).toThrow(/gemm: B2/);
    expect(() => k2(new Float32Array(4), new Float32Array(4), -1)).toThrow(/K2 must be a non-negative/);
    expect(Array.from(c)).toEqual([7, 7, 7, 7]);
    expect(() => (K.gemm as (...x: unknown[]) => void)(new Float32Array(4))).toThrow(/expected 10 arguments/);
  });

  it("attention: heads not a multiple of kv heads; rope: odd rotary dims", () => {
    const q = new Float32Array(2 * 3 * 4);
    expect(() => K.attentionFwd(q, null, q, q, q, 1, 2, 3, 2, 4, 1)).toThrow(/H \(3\) must be a multiple of KV \(2\)/);
    const o = new Float32Array(2 * 2 * 4);
    expect(() => K.attentionFwd(o, null, o, o, o, 1, 2, 2, 2, 4, 1, -3)).toThrow(
      /window must be a non-negative integer/,
    );
    expect(() => K.rope(q, q, q, q, 1, 2, 3, 4, 3, false, false)).toThrow(/rotary dims R must be even/);
  });

  it("xent: target out of range; selection: NaN scores, bad N:M", () => {
    expect(() => K.xent(new Float32Array(1), null, new Float32Array(3), Int32Array.of(5), 1, 3, -100, 1)).toThrow(
      /target 5 at row 0 is outside \[0, 3\)/,
    );
    expect(() => K.topkPrune(new Uint8Array(2), Float32Array.of(1, Number.NaN), 1, 2, 1, true)).toThrow(/NaN/);
    expect(() => K.nmKeep(new Uint8Array(8), new Float32Array(8), 1, 8, 4, 4)).toThrow(/N:M needs/);
    expect(() => K.nmKeep(new Uint8Array(6), new Float32Array(6), 1, 6, 2, 4)).toThrow(/not divisible by M=4/);
  });

  it("mmapFile: maps a file read-only; missing file is a clear error", () => {
    const dir = mkdtempSync(join(tmpdir(), "perp-"));
    const p = join(dir, "x.bin");
    writeFileSync(p, Buffer.from([1, 2, 3, 250]));
    const ab = K.mmapFile(p);
    expect(Array.from(new Uint8Array(ab))).toEqual([1, 2, 3, 250]);
    expect(() => K.mmapFile(join(dir, "nope.bin"))).toThrow(/cannot open .*nope\.bin/);
    writeFileSync(join(dir, "empty"), "");
    expect(K.mmapFile(join(dir, "empty")).byteLength).toBe(0);
  });

  it("adviseHuge: whole 2 MiB pages only, contents untouched; a non-array is a clear error", () => {
    const small = Float32Array.from([1, 2, 3]);
    expect(K.adviseHuge(small)).toBe(0);
    expect(Array.from(small)).toEqual([1, 2, 3]);
    const big = newF32(3 << 20); // 12 MiB: at least five aligned 2 MiB pages inside
    const advised = K.adviseHuge(big);
    expect(advised % (2 << 20)).toBe(0);
    if (thpAvailable() && process.env.PERP_HUGEPAGES !== "0") expect(advised).toBeGreaterThanOrEqual(5 * (2 << 20));
    expect(big.every((v) => v === 0)).toBe(true);
    big[big.length - 1] = 7;
    expect(big[big.length - 1]).toBe(7);
    expect(() => K.adviseHuge(42 as never)).toThrow(/adviseHuge: array must be a TypedArray/);
  });

  it("allocF32 / newF32: zeroed arrays on a cache line, of every size; bad sizes are clear errors", () => {
    for (const n of [0, 1, 3, 17, 1000, 4096, 1 << 20, 3 << 20]) {
      const a = newF32(n);
      expect(a.length).toBe(n);
      expect(K.alignment(a)).toBeGreaterThanOrEqual(64);
      expect(a.byteOffset + a.byteLength).toBeLessThanOrEqual(a.buffer.byteLength);
      expect(a.every((v) => v === 0)).toBe(true);
      if (n) a[n - 1] = 3;
    }
    // the probe itself: a view one float in is 4-byte but not 8-byte aligned
    expect(K.alignment(newF32(8).subarray(1))).toBe(4);
    expect(() => K.allocF32(-1)).toThrow(/allocF32: n must be a non-negative integer/);
    expect(() => K.allocF32(2.5)).toThrow(/allocF32: n must be a non-negative integer/);
    expect(() => K.alignment(42 as never)).toThrow(/alignment: array must be a TypedArray/);
  });
});

describe("tensor-level errors", () => {
  it("shape mismatches name the op and the shapes", () => {
    const x = Tensor.zeros([2, 3]);
    const W = Tensor.zeros([4, 5]);
    expect(() => F.linear(x, W)).toThrow(/linear: x \[2,3\] does not match weight \[4,5\]/);
    expect(() => F.add(x, Tensor.zeros([4]))).toThrow(/add: \[2,3\] and \[4\] differ/);
    expect(() => new Tensor(new Float32Array(5), [2, 3])).toThrow(/does not match shape/);
  });

  it("AdamW refuses a NaN gradient, naming the parameter, and leaves every weight untouched", () => {
    const a = new Tensor(Float32Array.of(1, 2), [2], true);
    const b = new Tensor(Float32Array.of(3), [1], true);
    a.grad = Float32Array.of(0.1, 0.2);
    b.grad = Float32Array.of(Number.NaN);
    const opt = new AdamW(
      [
        ["model.norm.weight", a],
        ["lm_head.weight", b],
      ],
      { lr: 0.1 },
    );
    expect(() => opt.update()).toThrow(/non-finite gradient in parameter 'lm_head.weight'/);
    expect(Array.from(a.data)).toEqual([1, 2]);
    expect(() => new AdamW([], { lr: 0 })).toThrow(/lr must be > 0/);
  });

  it("Cholesky of a non-positive-definite matrix reports the pivot", () => {
    expect(K.cholesky(Float32Array.of(1, 2, 2, 1), 2)).toBe(2);
  });
});
