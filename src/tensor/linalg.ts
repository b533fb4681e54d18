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
