// Mask selection, separate from scoring: a method returns scores, this file turns them into a keep-mask (1 = keep)
// within an explicit comparison group: the whole matrix, each output row, or N:M groups along the input dimension.
// N:M = keep at most N nonzeros in every M consecutive inputs of a row of W (out, in) (wanda's prune_n counts the
// removed ones: prune_n = M − N).
import { K } from "../tensor/native.js";

export interface NM {
  n: number;
  m: number;
}

export type Scope = "matrix" | "row";

export class PruneError extends Error {}

export function parsePattern(p: string | undefined | null): NM | null {
  if (!p || p === "unstructured") return null;
  const m = /^(\d+):(\d+)$/.exec(p);
  if (!m) throw new PruneError(`pattern '${p}' is not 'unstructured' or N:M (e.g. 2:4)`);
  const nm = { n: Number(m[1]), m: Number(m[2]) };
  if (!(nm.n >= 1 && nm.n < nm.m)) throw new PruneError(`N:M pattern needs 1 <= N < M (got ${p})`);
  return nm;
}

export function checkSparsity(s: number): void {
  if (!(s >= 0 && s < 1)) throw new PruneError(`sparsity must be in [0, 1) (got ${s})`);
}

/** Keep-mask from scores (rows x cols): prune exactly round(s·n) lowest per scope, or keep the N highest per M. */
export function selectMask(
  scores: Float32Array,
  rows: number,
  cols: number,
  sparsity: number,
  scope: Scope,
  nm: NM | null,
): Uint8Array {
  const mask = new Uint8Array(rows * cols);
  if (nm) {
    if (cols % nm.m !== 0)
      throw new PruneError(`input dimension ${cols} is not divisible by M=${nm.m} of the ${nm.n}:${nm.m} pattern`);
    K.nmKeep(mask, scores, rows, cols, nm.n, nm.m);
    return mask;
  }
  checkSparsity(sparsity);
  const k = Math.round(sparsity * (scope === "row" ? cols : rows * cols));
  K.topkPrune(mask, scores, rows, cols, k, scope === "row");
  return mask;
}

export function countZeros(mask: Uint8Array): number {
  let z = 0;
  for (let i = 0; i < mask.length; i++) if (!mask[i]) z++;
  return z;
}

export function zerosOf(w: Float32Array): number {
  let z = 0;
  for (let i = 0; i < w.length; i++) if (w[i] === 0) z++;
  return z;
}

/** True when every M-group of every row holds at most N nonzeros. */
export function isNM(w: Float32Array, rows: number, cols: number, nm: NM): boolean {
  if (cols % nm.m) return false;
  for (let r = 0; r < rows; r++)
    for (let g = 0; g < cols; g += nm.m) {
      let nz = 0;
      for (let j = 0; j < nm.m; j++) if (w[r * cols + g + j] !== 0) nz++;
      if (nz > nm.n) return false;
    }
  return true;
}

/** Detects the tightest N:M (M in 4, 8) that every group satisfies, if any. */
export function detectNM(w: Float32Array, rows: number, cols: number): NM | null {
  for (const m of [4, 8])
    for (let n = 1; n < m; n++) if (cols % m === 0 && isNM(w, rows, cols, { n, m })) return { n, m };
  return null;
}

export function packMask(mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(mask.length / 8));
  for (let i = 0; i < mask.length; i++) if (mask[i]) out[i >> 3] |= 1 << (i & 7);
  return out;
}

export function unpackMask(bits: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (bits[i >> 3] >> (i & 7)) & 1;
  return out;
}

/** Throws unless every masked-out weight is exactly 0.0 (the sparsity invariant). */
export function assertMasked(name: string, w: Float32Array, mask: Uint8Array): void {
  for (let i = 0; i < w.length; i++)
    if (!mask[i] && w[i] !== 0)
      throw new PruneError(`sparsity invariant broken: ${name}[${i}] = ${w[i]} is pruned but not 0`);
}

/** (rows x cols) → (cols x rows). */
export function transpose<T extends Float32Array | Uint8Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as { new (n: number): T })(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}
