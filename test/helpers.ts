import { expect } from "vitest";
import { Rng } from "../src/tensor/rng.js";

export function randF32(n: number, seed: number, std = 1): Float32Array {
  return new Rng(seed).fillNormal(new Float32Array(n), std) as Float32Array;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return Number.POSITIVE_INFINITY;
    m = Math.max(m, d);
  }
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** |a - b| <= atol + rtol * max|b| element-wise (a scale-aware closeness for float32 kernels). */
export function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = ""): void {
  const tol = atol + rtol * maxAbs(b);
  const d = maxAbsDiff(a, b);
  if (!(d <= tol)) throw new Error(`${what} max abs diff ${d} > tol ${tol} (max|ref| ${maxAbs(b)})`);
}

export function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

export const AWKWARD = [1, 3, 17, 33, 129];
