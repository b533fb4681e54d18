// Checked linear-algebra helpers over the native kernels (errors say what failed and where).
import { K } from "./native.js";

/** Lower Cholesky factor of the symmetric positive-definite (n x n) matrix `a`, in place. */
export function choleskyInPlace(a: Float32Array, n: number, what = "matrix"): Float32Array {
  const info = K.cholesky(a, n);
  if (info !== 0)
    throw new Error(
      `cholesky: ${what} (${n}x${n}) is not positive definite: pivot ${info - 1} is ${a[(info - 1) * n + info - 1]} after elimination`,
    );
  return a;
}

/** Inverse of a lower-triangular (n x n) matrix. */
export function invertLower(L: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * n);
  K.trtriLower(out, L, n);
  return out;
}

/**
 * XᵀX of an (n x cols) matrix, lower triangle only (and the diagonal blocks whole): one GEMM per 256-row block of the
 * result, up to its diagonal block — about half the flops of the full product. Each element is the same FMA sequence
 * the full GEMM would give it (the GEMM computes every element alike, wherever its tile lies), so the lower triangle
 * is bit for bit the full product's; `symmetrize` copies it up when the statistics are used.
 */
export function gramLower(x: Float32Array, n: number, cols: number): Float32Array {
  const out = new Float32Array(cols * cols);
  const NB = 256;
  for (let i0 = 0; i0 < cols; i0 += NB) {
    const rows = Math.min(NB, cols - i0);
    const width = i0 + rows;
    K.gemm(out.subarray(i0 * cols), x.subarray(i0), x, rows, width, n, true, false, 1, 0, "f32", cols, cols, cols);
  }
  return out;
}

/** Copies the lower triangle of a square matrix onto its upper one, in place. */
export function symmetrize(a: Float32Array, n: number): Float32Array {
  const B = 64; // in tiles, so the strided side stays in cache
  for (let i0 = 0; i0 < n; i0 += B)
    for (let j0 = 0; j0 <= i0; j0 += B)
      for (let i = i0; i < Math.min(i0 + B, n); i++)
        for (let j = j0; j < Math.min(j0 + B, i); j++) a[j * n + i] = a[i * n + j];
  return a;
}
