// SparseGPT (arXiv 2301.00774; IST-DASLab/sparsegpt sparsegpt.py fasterprune): H = 2/n·XᵀX, dead inputs (H_jj = 0)
// get H_jj = 1 and W[:, j] = 0, dampening percdamp·mean(diag H), Hinv = cholesky(H⁻¹) upper, columns in blocks of
// 128 with OBS updates inside a block and a lazy GEMM update of the rest. Mask selection: unstructured = adaptive per
// 128-column block with exactly round(s·rows·block) pruned (the reference prunes `tmp <= sorted[int(s·n)]`, one
// more); N:M = the M−N lowest of W²/diag(Hinv)² per row in each group, chosen when the group's first column is reached.
import { choleskyInPlace, invertLower, symmetrize } from "../tensor/linalg.js";
import { K } from "../tensor/native.js";
import { PruneError } from "./mask.js";
import type { PruneOutput, PruneSpec } from "./methods.js";

export interface SparseGPTOptions {
  blocksize?: number;
  percdamp?: number;
}

/** Upper Cholesky factor of H⁻¹ (returned transposed-ready: U[i*n + j] for j >= i), retrying with more dampening. */
export function hinvUpper(
  H: Float32Array,
  n: number,
  percdamp: number,
  layer: string,
): { U: Float32Array; damp: number } {
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i];
  mean /= n;
  let pd = percdamp;
  // With P the reversal permutation, P H P = L Lᵀ gives H⁻¹ = (P L⁻¹ P)ᵀ (P L⁻¹ P), and P L⁻¹ P is upper triangular
  // with a positive diagonal: the upper Cholesky factor of H⁻¹ (the reference's cholesky → cholesky_inverse →
  // cholesky(upper)) from one factorization and one triangular inverse, without forming H⁻¹. P X P of an n x n
  // row-major matrix is its flat array reversed.
  const nn = n * n;
  for (let attempt = 0; attempt < 4; attempt++, pd *= 10) {
    const A = new Float32Array(nn);
    for (let k = 0; k < nn; k++) A[k] = H[nn - 1 - k];
    for (let i = 0; i < n; i++) A[i * n + i] += pd * mean;
    try {
      choleskyInPlace(A, n, `${layer} Hessian`);
      const Li = invertLower(A, n);
      const U = A; // the factor is no longer needed: U = P L⁻¹ P goes into its buffer (one n x n array less)
      for (let k = 0; k < nn; k++) U[k] = Li[nn - 1 - k];
      return { U, damp: pd };
    } catch {
      // retry with 10x the dampening
    }
  }
  throw new PruneError(
    `${layer}: the calibration Hessian is not positive definite even with dampening ${pd / 10} (try more calibration samples)`,
  );
}

export function sparsegptPrune(
  W0: Float32Array,
  rows: number,
  cols: number,
  xtx: Float32Array,
  tokens: number,
  spec: PruneSpec,
  layer: string,
  opts: SparseGPTOptions = {},
): PruneOutput {
  const bsz = opts.blocksize ?? 128;
  const percdamp = opts.percdamp ?? 0.01;
  const nm = spec.nm;
  if (nm && cols % nm.m) throw new PruneError(`${layer}: input dimension ${cols} is not divisible by M=${nm.m}`);
  if (nm && bsz % nm.m) throw new PruneError(`${layer}: block size ${bsz} is not a multiple of M=${nm.m}`);
  const W = W0.slice();
  const H = new Float32Array(cols * cols);
  const s = 2 / Math.max(tokens, 1);
  for (let i = 0; i < H.length; i++) H[i] = s * xtx[i];
  symmetrize(H, cols); // only xtx's lower triangle is read (gramLower computes no more)
  let dead = 0;
  for (let j = 0; j < cols; j++)
    if (H[j * cols + j] === 0) {
      dead++;
      H[j * cols + j] = 1;
      for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
    }
  const { U, damp } = hinvUpper(H, cols, percdamp, layer);
  const mask = new Uint8Array(rows * cols);
  let loss = 0;
  for (let i1 = 0; i1 < cols; i1 += bsz) {
    const i2 = Math.min(i1 + bsz, cols);
    const bs = i2 - i1;
    const W1 = new Float32Array(rows * bs);
    for (let r = 0; r < rows; r++) W1.set(W.subarray(r * cols + i1, r * cols + i2), r * bs);
    const Err1 = new Float32Array(rows * bs);
    const mask1 = new Uint8Array(rows * bs).fill(1);
    const d = new Float32Array(bs);
    for (let i = 0; i < bs; i++) d[i] = U[(i1 + i) * cols + i1 + i];
    if (!nm) {
      const tmp = new Float32Array(rows * bs);
      for (let r = 0; r < rows; r++)
        for (let i = 0; i < bs; i++) tmp[r * bs + i] = (W1[r * bs + i] * W1[r * bs + i]) / (d[i] * d[i]);
      K.topkPrune(mask1, tmp, 1, rows * bs, Math.round(spec.sparsity * rows * bs), false);
    }
    // The OBS pass over the block's columns (rows in parallel, natively); U's rows i1.. from column i1.
    loss += K.sparsegptObs(W1, Err1, mask1, U.subarray(i1 * cols + i1), cols, d, rows, bs, nm?.n ?? 0, nm?.m ?? 0);
    for (let r = 0; r < rows; r++) {
      W.set(W1.subarray(r * bs, (r + 1) * bs), r * cols + i1);
      mask.set(mask1.subarray(r * bs, (r + 1) * bs), r * cols + i1);
    }
    if (i2 < cols) {
      // W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
      const rest = cols - i2;
      K.gemm(
        W.subarray(i2),
        Err1,
        U.subarray(i1 * cols + i2),
        rows,
        rest,
        bs,
        false,
        false,
        -1,
        1,
        "f32",
        bs,
        cols,
        cols,
      );
    }
  }
  for (let i = 0; i < W.length; i++) if (!mask[i]) W[i] = 0;
  return { W, mask, info: { error: loss, dead, damp } };
}
