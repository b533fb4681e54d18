// Differentiable ops over Tensors: each runs one coarse native kernel forward and records a backward that asks only
// for the gradients its inputs need (no dW GEMM for a frozen weight, no dX for an input that needs none).
import { activeArena, alloc, allocRaw } from "../tensor/arena.js";
import { K } from "../tensor/native.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import { assertShape, type PackedWeight, Tensor } from "../tensor/tensor.js";
import {
  addGrad,
  backward,
  commitGrad,
  gradStats,
  gradTarget,
  isGradEnabled,
  leafGrad,
  leafGradRows,
  leafGradSlot,
  record,
  tapeReadsTrainable,
  withPrivateTape,
} from "./tape.js";

const EW_ADD = 0;
const EW_MUL = 1;
const EW_AXPY = 2;
const EW_SCALE = 3;

function lastDim(t: Tensor): number {
  return t.shape[t.shape.length - 1];
}

function rowsOf(t: Tensor, cols: number, op: string): number {
  if (t.size % cols !== 0) throw new RangeError(`${op}: size ${t.size} of [${t.shape}] is not a multiple of ${cols}`);
  return t.size / cols;
}

/**
 * dW (and db) of y = x Wᵀ + b for upstream g (M, out): accumulated straight into a leaf's .grad, else routed through
 * the tape. Conv1D layout (inOut): dW = Xᵀ · dY (in, out).
 */
function weightGrads(
  x: Tensor,
  W: Tensor,
  b: Tensor | null | undefined,
  g: Float32Array,
  M: number,
  out: number,
  inp: number,
  inOut: boolean,
): void {
  if (W.requiresGrad) {
    const lg = leafGradSlot(W);
    const dw = lg?.buf ?? allocRaw(W.size);
    const beta = lg?.beta ?? 0;
    if (inOut) K.gemm(dw, x.data, g, inp, out, M, true, false, 1, beta);
    else K.gemm(dw, g, x.data, out, inp, M, true, false, 1, beta);
    gradStats.dWGemms++;
    gradStats.dWFlops += 2 * out * inp * M;
    if (!lg) addGrad(W, dw);
  }
  if (b?.requiresGrad) {
    const lg = leafGrad(b);
    const db = lg ?? alloc(out);
    K.biasGrad(db, g, M, out);
    if (!lg) addGrad(b, db);
  }
}

/** The pre-packed copies of W for a LoRA term of rank k2 (0: none), when W is frozen and packed for it. */
function packedFor(W: Tensor, k2: number): PackedWeight | null {
  const p = W.packed;
  return p && p.k2 === k2 && !W.requiresGrad ? p : null;
}

/**
 * C (M, N) = A (M, Kd) · op(W) with W in its storage dtype (op(W) = Wᵀ when transW), plus an optional rank-r term
 * A2 (M, r) · B2 appended along K (B2 stored (N, r) when transB2, else (r, N)); `packed`: W's pre-packed panels.
 */
function weightGemm(
  C: Float32Array,
  A: Float32Array,
  W: Tensor,
  M: number,
  N: number,
  Kd: number,
  transW: boolean,
  packed: Float32Array | undefined,
  lora?: { A2: Float32Array; B2: Float32Array; r: number; transB2: boolean },
  beta: 0 | 1 = 0,
): void {
  const half = W.half;
  const u = undefined;
  const [A2, B2, r, tB2] = lora ? [lora.A2, lora.B2, lora.r, lora.transB2] : [u, u, 0, false];
  const wb = (half ? half.bits : W.data) as never;
  K.gemm(C, A, wb, M, N, Kd, false, transW, 1, beta, half ? half.dtype : "f32", u, u, u, A2, B2, r, false, tB2, packed);
}

/**
 * y = x Wᵀ + b. x: (..., in), W: (out, in) (f32 data or bf16/f16 `half` storage), b: (out).
 * With `inOut` the weight is stored (in, out) — GPT-2's Conv1D layout — and y = x W + b.
 */
export function linear(x: Tensor, W: Tensor, b?: Tensor | null, inOut = false): Tensor {
  const [out, inp] = inOut ? [W.shape[1], W.shape[0]] : W.shape;
  if (lastDim(x) !== inp) throw new RangeError(`linear: x [${x.shape}] does not match weight [${W.shape}]`);
  if (b) assertShape("linear bias", b, [out]);
  const M = rowsOf(x, inp, "linear");
  const y = Tensor.alloc([...x.shape.slice(0, -1), out]);
  const pk = packedFor(W, 0);
  weightGemm(y.data, x.data, W, M, out, inp, !inOut, pk?.fwd);
  if (b) K.biasAdd(y.data, b.data, M, out);
  const inputs = b ? [x, W, b] : [x, W];
  return record(y, inputs, (g) => {
    if (x.requiresGrad) {
      // dX = dY · W : (M, out) x (out, in), added to x's gradient so far when it has one (see gradTarget)
      const dx = gradTarget(x, x.size);
      weightGemm(dx.buf, g, W, M, inp, out, inOut, pk?.bwd, undefined, dx.beta);
      gradStats.dXGemms++;
      commitGrad(x, dx);
    }
    weightGrads(x, W, b, g, M, out, inp, inOut);
  });
}

/**
 * Fused LoRA linear: y = x Wᵀ + b + s·(x Aᵀ) Bᵀ with A (r, in), B (out, r); one node instead of five, the low-rank
 * product accumulated straight into y (GEMM beta = 1). W may be frozen (then no dW GEMM), stored (in, out) with inOut.
 */
export function loraLinear(
  x: Tensor,
  W: Tensor,
  b: Tensor | null,
  A: Tensor,
  Bm: Tensor,
  s: number,
  inOut = false,
): Tensor {
  const [out, inp] = inOut ? [W.shape[1], W.shape[0]] : W.shape;
  const r = A.shape[0];
  if (lastDim(x) !== inp) throw new RangeError(`linear: x [${x.shape}] does not match weight [${W.shape}]`);
  const M = rowsOf(x, inp, "linear");
  const y = Tensor.alloc([...x.shape.slice(0, -1), out]);
  const pk = packedFor(W, r);
  const xa = allocRaw(M * r); // s · x Aᵀ : (M, r)
  K.gemm(xa, x.data, A.data, M, r, inp, false, true, s, 0);
  // y = x Wᵀ + xa Bᵀ in one GEMM: the rank-r product joins the last K block of the main one (no second pass over y)
  weightGemm(y.data, x.data, W, M, out, inp, !inOut, pk?.fwd, { A2: xa, B2: Bm.data, r, transB2: true });
  if (b) K.biasAdd(y.data, b.data, M, out);
  const inputs = b ? [x, W, A, Bm, b] : [x, W, A, Bm];
  return record(y, inputs, (g) => {
    const gxa = allocRaw(M * r); // s · g B : (M, r)
    K.gemm(gxa, g, Bm.data, M, r, out, false, false, s, 0);
    if (Bm.requiresGrad) {
      const lg = leafGradSlot(Bm);
      const dB = lg?.buf ?? allocRaw(Bm.size);
      K.gemm(dB, g, xa, out, r, M, true, false, 1, lg?.beta ?? 0); // s · gᵀ (x Aᵀ) : (out, r)
      if (!lg) addGrad(Bm, dB);
    }
    if (A.requiresGrad) {
      const lg = leafGradSlot(A);
      const dA = lg?.buf ?? allocRaw(A.size);
      K.gemm(dA, gxa, x.data, r, inp, M, true, false, 1, lg?.beta ?? 0); // gxaᵀ x : (r, in)
      if (!lg) addGrad(A, dA);
    }
    gradStats.dWGemms += (A.requiresGrad ? 1 : 0) + (Bm.requiresGrad ? 1 : 0);
    if (x.requiresGrad) {
      const dx = gradTarget(x, x.size);
      // dx = g W + gxa A, again as one GEMM with the rank-r product appended along K
      weightGemm(dx.buf, g, W, M, inp, out, inOut, pk?.bwd, { A2: gxa, B2: A.data, r, transB2: false }, dx.beta);
      gradStats.dXGemms++;
      commitGrad(x, dx);
    }
    weightGrads(x, W, b, g, M, out, inp, inOut);
  });
}

/** y[:, j] = x[:, cols[j]] for a (M, N) view of x (splits fused QKV projections); backward scatter-adds. */
export function gatherCols(x: Tensor, cols: Int32Array, outShape?: number[]): Tensor {
  const N = lastDim(x);
  const M = rowsOf(x, N, "gatherCols");
  const J = cols.length;
  const y = Tensor.alloc(outShape ?? [...x.shape.slice(0, -1), J]);
  if (y.size !== M * J) throw new RangeError(`gatherCols: out shape [${outShape}] does not hold ${M}x${J}`);
  for (const c of cols) if (!(c >= 0 && c < N)) throw new RangeError(`gatherCols: column ${c} outside [0, ${N})`);
  const xd = x.data;
  const yd = y.data;
  // A contiguous range (Phi-3's q / k / v and gate / up halves) is copied row by row with set().
  const c0 = J > 0 ? cols[0] : 0;
  const contiguous = cols.every((c, j) => c === c0 + j);
  for (let i = 0; i < M; i++) {
    const xo = i * N;
    const yo = i * J;
    if (contiguous) yd.set(xd.subarray(xo + c0, xo + c0 + J), yo);
    else for (let j = 0; j < J; j++) yd[yo + j] = xd[xo + cols[j]];
  }
  return record(y, [x], (g) => {
    const dx = alloc(x.size);
    for (let i = 0; i < M; i++) {
      const xo = i * N;
      const yo = i * J;
      if (contiguous) dx.set(g.subarray(yo, yo + J), xo + c0);
      else for (let j = 0; j < J; j++) dx[xo + cols[j]] += g[yo + j];
    }
    addGrad(x, dx);
  });
}

/** C = op(A) op(B) for 2-D tensors (used by LoRA reparametrisations: B·A). */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const [ar, ac] = a.shape;
  const [br, bc] = b.shape;
  const M = transA ? ac : ar;
  const Kd = transA ? ar : ac;
  const N = transB ? br : bc;
  if ((transB ? bc : br) !== Kd) throw new RangeError(`matmul: [${a.shape}] and [${b.shape}] do not fit`);
  const c = Tensor.alloc([M, N]);
  K.gemm(c.data, a.data, b.data, M, N, Kd, transA, transB, 1, 0);
  return record(c, [a, b], (g) => {
    if (a.requiresGrad) {
      // dA = g · op(B)ᵀ (or its transpose when A is transposed)
      const da = allocRaw(a.size);
      if (!transA) K.gemm(da, g, b.data, M, Kd, N, false, !transB, 1, 0);
      else K.gemm(da, b.data, g, Kd, M, N, transB, true, 1, 0);
      addGrad(a, da);
    }
    if (b.requiresGrad) {
      const db = allocRaw(b.size);
      if (!transB) K.gemm(db, a.data, g, Kd, N, M, !transA, false, 1, 0);
      else K.gemm(db, g, a.data, N, Kd, M, true, transA, 1, 0);
      addGrad(b, db);
    }
  });
}

export function add(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) throw new RangeError(`add: [${a.shape}] and [${b.shape}] differ`);
  const y = Tensor.alloc(a.shape);
  K.ew(EW_ADD, y.data, a.data, b.data, 0);
  return record(y, [a, b], (g) => {
    addGrad(a, g);
    // a and b hold the same buffer: copy on write (a slice() per residual add was the step's ~9K page faults)
    if (b.requiresGrad) addGrad(b, g, a.requiresGrad && !a.isLeaf);
  });
}

/** A copy of g in a buffer from the active arena (recycled, no page faults). */
function copyOf(g: Float32Array): Float32Array {
  const c = allocRaw(g.length);
  c.set(g);
  return c;
}

export function mul(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) throw new RangeError(`mul: [${a.shape}] and [${b.shape}] differ`);
  const y = Tensor.alloc(a.shape);
  K.ew(EW_MUL, y.data, a.data, b.data, 0);
  return record(y, [a, b], (g) => {
    if (a.requiresGrad) {
      const da = allocRaw(a.size);
      K.ew(EW_MUL, da, g, b.data, 0);
      addGrad(a, da);
    }
    if (b.requiresGrad) {
      const db = allocRaw(b.size);
      K.ew(EW_MUL, db, g, a.data, 0);
      addGrad(b, db);
    }
  });
}

export function scale(a: Tensor, s: number): Tensor {
  const y = Tensor.alloc(a.shape);
  K.ew(EW_SCALE, y.data, a.data, null, s);
  return record(y, [a], (g) => {
    const da = allocRaw(a.size);
    K.ew(EW_SCALE, da, g, null, s);
    addGrad(a, da);
  });
}

/** Elementwise product with a constant 0/1 mask (no gradient to the mask). */
export function maskMul(a: Tensor, mask: Uint8Array): Tensor {
  if (mask.length !== a.size) throw new RangeError(`maskMul: mask length ${mask.length} != ${a.size}`);
  const y = new Tensor(a.data.slice(), a.shape);
  K.maskApply(y.data, mask);
  return record(y, [a], (g) => {
    const da = copyOf(g);
    K.maskApply(da, mask);
    addGrad(a, da);
  });
}

/**
 * W + s·(D ⊙ mask) in one pass (MaskLoRA's effective weight, D = BA), the same bits as add(W, scale(maskMul(D), s)):
 * gradient s·(g ⊙ mask) to D, g to W when W is trained.
 */
export function maskedScaleAdd(W: Tensor, D: Tensor, mask: Uint8Array, s: number): Tensor {
  if (mask.length !== D.size || W.size !== D.size)
    throw new RangeError(`maskedScaleAdd: [${W.shape}], [${D.shape}] and mask length ${mask.length} differ`);
  const y = Tensor.alloc(W.shape);
  K.maskedScaleAdd(y.data, W.data, D.data, mask, s);
  return record(y, [W, D], (g) => {
    if (D.requiresGrad) {
      const dd = allocRaw(D.size);
      K.maskedScaleAdd(dd, null, g, mask, s);
      addGrad(D, dd);
    }
    if (W.requiresGrad) addGrad(W, g, D.requiresGrad);
  });
}

/** Same data, new shape; the gradient passes through unchanged. */
export function reshape(a: Tensor, shape: number[]): Tensor {
  const y = new Tensor(a.data, shape);
  return record(y, [a], (g) => addGrad(a, g));
}

export function rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const C = w.size;
  const M = rowsOf(x, C, "rmsnorm");
  const y = Tensor.alloc(x.shape);
  const rstd = alloc(M);
  K.rmsnormFwd(y.data, rstd, x.data, w.data, M, C, eps);
  return record(y, [x, w], (g) => {
    const dx = x.requiresGrad ? allocRaw(x.size) : null;
    const lg = leafGrad(w);
    const dw = w.requiresGrad ? (lg ?? alloc(C)) : null;
    K.rmsnormBwd(dx, dw, g, x.data, w.data, rstd, M, C);
    if (dx) addGrad(x, dx);
    if (dw && !lg) addGrad(w, dw);
  });
}

export function layernorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps: number): Tensor {
  const C = lastDim(x);
  const M = rowsOf(x, C, "layernorm");
  const y = Tensor.alloc(x.shape);
  const mean = alloc(M);
  const rstd = alloc(M);
  K.layernormFwd(y.data, mean, rstd, x.data, w?.data ?? null, b?.data ?? null, M, C, eps);
  const inputs = [x, ...(w ? [w] : []), ...(b ? [b] : [])];
  return record(y, inputs, (g) => {
    const dx = x.requiresGrad ? allocRaw(x.size) : null;
    const lw = w ? leafGrad(w) : null;
    const lb = b ? leafGrad(b) : null;
    const dw = w?.requiresGrad ? (lw ?? alloc(C)) : null;
    const db = b?.requiresGrad ? (lb ?? alloc(C)) : null;
    K.layernormBwd(dx, dw, db, g, x.data, mean, rstd, w?.data ?? null, M, C);
    if (dx) addGrad(x, dx);
    if (w && dw && !lw) addGrad(w, dw);
    if (b && db && !lb) addGrad(b, db);
  });
}

export interface RopeTables {
  cos: Float32Array;
  sin: Float32Array;
  /** Rotated dims per head (partial rotary: R < D). */
  R: number;
  interleaved: boolean;
  /** Tables hold one row per token of the batch (B·T rows: each row of the batch at positions of its own). */
  perToken?: boolean;
}

/**
 * x: (B, T, H, D) → rotated copy. Tables are (T, R/2) for the T positions of this call, or with `perToken` (B·T, R/2):
 * a position per token.
 */
export function rope(x: Tensor, B: number, T: number, H: number, D: number, tab: RopeTables): Tensor {
  const y = Tensor.alloc(x.shape);
  const [b, t] = tab.perToken ? [1, B * T] : [B, T];
  K.rope(y.data, x.data, tab.cos, tab.sin, b, t, H, D, tab.R, tab.interleaved, false);
  return record(y, [x], (g) => {
    const dx = allocRaw(x.size);
    K.rope(dx, g, tab.cos, tab.sin, b, t, H, D, tab.R, tab.interleaved, true);
    addGrad(x, dx);
  });
}

/**
 * Causal self-attention with GQA. q: (B, T, H·D), k/v: (B, T, KV·D) → (B, T, H·D). `window` > 0: each query sees only
 * the last `window` keys up to itself (Mistral's sliding window, transformers' `kv_idx > q_idx - sliding_window`).
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  B: number,
  T: number,
  H: number,
  KV: number,
  D: number,
  scaleQK = 1 / Math.sqrt(D),
  window = 0,
): Tensor {
  const y = Tensor.alloc(q.shape);
  const keep = isGradEnabled() && (q.requiresGrad || k.requiresGrad || v.requiresGrad);
  const P = keep ? allocRaw(B * H * T * T) : null;
  K.attentionFwd(y.data, P, q.data, k.data, v.data, B, T, H, KV, D, scaleQK, window);
  return record(y, [q, k, v], (g) => {
    const dq = allocRaw(q.size);
    const dk = allocRaw(k.size);
    const dv = allocRaw(v.size);
    K.attentionBwd(dq, dk, dv, g, q.data, k.data, v.data, P as Float32Array, B, T, H, KV, D, scaleQK);
    addGrad(q, dq);
    addGrad(k, dk);
    addGrad(v, dv);
  });
}

export function act(x: Tensor, kind: ActKind): Tensor {
  const y = Tensor.alloc(x.shape);
  K.actFwd(y.data, x.data, kind);
  return record(y, [x], (g) => {
    const dx = allocRaw(x.size);
    K.actBwd(dx, g, x.data, kind);
    addGrad(x, dx);
  });
}

/** SwiGLU: silu(g) ⊙ u. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const y = Tensor.alloc(gate.shape);
  K.swigluFwd(y.data, gate.data, up.data);
  return record(y, [gate, up], (g) => {
    const dg = gate.requiresGrad ? allocRaw(gate.size) : null;
    const du = up.requiresGrad ? allocRaw(up.size) : null;
    K.swigluBwd(dg, du, g, gate.data, up.data);
    if (dg) addGrad(gate, dg);
    if (du) addGrad(up, du);
  });
}

/** Rows of `table` (V, C) for each id → (n, C); the backward skips positions holding `paddingIdx` (PyTorch's
 * padding_idx). */
export function embedding(ids: Int32Array, table: Tensor, paddingIdx = -1): Tensor {
  const [V, C] = table.shape;
  const y = Tensor.alloc([ids.length, C]);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!(id >= 0 && id < V)) throw new RangeError(`embedding: token id ${id} at position ${i} is outside [0, ${V})`);
    y.data.set(table.data.subarray(id * C, (id + 1) * C), i * C);
  }
  return record(y, [table], (g) => {
    const lg = leafGradRows(table, ids, C);
    const dt = lg ?? alloc(table.size);
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] === paddingIdx) continue;
      const o = ids[i] * C;
      for (let j = 0; j < C; j++) dt[o + j] += g[i * C + j];
    }
    if (!lg) addGrad(table, dt);
  });
}

/**
 * Mean next-token cross-entropy over the rows whose target is not `ignoreIndex`. logits: (M, V) → scalar.
 * Also returns the per-row losses (−log p(target)) for evaluation.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Int32Array,
  ignoreIndex = -100,
): { loss: Tensor; rowLoss: Float32Array; count: number } {
  const V = lastDim(logits);
  const M = rowsOf(logits, V, "crossEntropy");
  if (targets.length !== M) throw new RangeError(`crossEntropy: ${targets.length} targets for ${M} rows`);
  const rowLoss = alloc(M);
  // Recording: the gradient (softmax − onehot)/count is produced in the same pass as the loss, so backward needs no
  // second pass over the (M, V) logits; it is rescaled only if the upstream gradient is not 1.
  const rec = isGradEnabled() && logits.requiresGrad;
  let count = 0;
  for (let i = 0; i < M; i++) if (targets[i] !== ignoreIndex) count++;
  const dl = rec ? allocRaw(logits.size) : null;
  K.xent(rowLoss, dl, logits.data, targets, M, V, ignoreIndex, count ? 1 / count : 0);
  let sum = 0;
  for (let i = 0; i < M; i++) if (targets[i] !== ignoreIndex) sum += rowLoss[i];
  const loss = new Tensor(Float32Array.of(count ? sum / count : 0), [1]);
  record(loss, [logits], (g) => {
    const d = dl as Float32Array;
    if (g[0] !== 1) K.ew(EW_SCALE, d, d, null, g[0]);
    addGrad(logits, d);
  });
  return { loss, rowLoss, count };
}

/**
 * Mean next-token cross-entropy of head(h) over the rows of h (targets -100: ignored), for an LM head: with a frozen
 * head, in chunks of rows holding at most `maxLogits` logits, each chunk's logits and their gradient alive only while
 * it runs (the gradient with respect to h is taken chunk by chunk, on a private tape, during this forward), so a
 * (rows x vocabulary) logits matrix is never in memory whole: 2048 tokens of a 256K vocabulary are 2.1 GB of logits
 * and as much again of their gradient. The loss and h's gradient have the bits of crossEntropy(head(h)) (a backward
 * seed other than 1 scales the gradient after the product instead of before). A head with trainable parameters (its
 * weight gradient needs every row at once) takes that one pass.
 */
export function headCrossEntropy(
  h: Tensor,
  head: (x: Tensor) => Tensor,
  targets: Int32Array,
  vocab: number,
  maxLogits = 64 * 2 ** 20,
): { loss: Tensor; count: number } {
  const C = lastDim(h);
  const M = rowsOf(h, C, "headCrossEntropy");
  if (targets.length !== M) throw new RangeError(`headCrossEntropy: ${targets.length} targets for ${M} rows`);
  const most = Math.max(1, Math.floor(maxLogits / vocab));
  // chunks of one size (the last padded with ignored rows), so that a step arena hands every chunk the same buffers
  const rows = Math.ceil(M / Math.ceil(M / most));
  const whole = () => crossEntropy(head(h), targets);
  if (rows >= M) return whole();
  if (!isGradEnabled()) {
    const { sum, count } = headNll(h, head, targets, vocab, maxLogits);
    return { loss: new Tensor(Float32Array.of(count ? sum / count : 0), [1]), count };
  }
  if (!h.requiresGrad) return whole(); // only the head can want a gradient, and its weight gradient needs every row
  let count = 0;
  for (let i = 0; i < M; i++) if (targets[i] !== -100) count++;
  const arena = activeArena();
  const dh = alloc(M * C);
  let sum = 0;
  for (let r0 = 0; r0 < M; r0 += rows) {
    const n = Math.min(rows, M - r0);
    const m0 = arena?.mark() ?? 0;
    const trainableHead = withPrivateTape(() => {
      const src = h.data.subarray(r0 * C, (r0 + n) * C);
      let x = src;
      let t = targets.subarray(r0, r0 + n);
      if (n < rows) {
        x = alloc(rows * C);
        x.set(src);
        t = new Int32Array(rows).fill(-100);
        t.set(targets.subarray(r0, r0 + n));
      }
      const xin = new Tensor(x, [rows, C], true);
      const logits = head(xin);
      if (tapeReadsTrainable(xin)) return true;
      const rowLoss = alloc(rows);
      const dl = allocRaw(logits.size);
      K.xent(rowLoss, dl, logits.data, t, rows, vocab, -100, count ? 1 / count : 0);
      for (let i = 0; i < n; i++) if (t[i] !== -100) sum += rowLoss[i];
      backward(logits, dl);
      if (xin.grad) dh.set(xin.grad.subarray(0, n * C), r0 * C);
      return false;
    });
    arena?.releaseSince(m0, [dh]);
    if (trainableHead) return whole();
  }
  const loss = new Tensor(Float32Array.of(count ? sum / count : 0), [1]);
  record(loss, [h], (g) => {
    if (g[0] !== 1) K.ew(EW_SCALE, dh, dh, null, g[0]);
    addGrad(h, dh);
  });
  return { loss, count };
}

/**
 * Summed next-token NLL of head(h) over the rows of h and how many rows count (targets -100: ignored), without
 * gradients: the head and the cross-entropy over chunks of rows holding at most `maxLogits` logits, so a large
 * vocabulary's logits are never in memory whole; every row's logits and loss are those of one pass (the head's GEMM
 * and the cross-entropy work row by row), summed in row order.
 */
export function headNll(
  h: Tensor,
  head: (x: Tensor) => Tensor,
  targets: Int32Array,
  vocab: number,
  maxLogits = 64 * 2 ** 20,
): { sum: number; count: number } {
  const C = lastDim(h);
  const M = rowsOf(h, C, "headNll");
  if (targets.length !== M) throw new RangeError(`headNll: ${targets.length} targets for ${M} rows`);
  const rows = Math.max(1, Math.min(M, Math.floor(maxLogits / vocab)));
  let sum = 0;
  let count = 0;
  for (let r0 = 0; r0 < M; r0 += rows) {
    const n = Math.min(rows, M - r0);
    const part = n === M ? h : new Tensor(h.data.subarray(r0 * C, (r0 + n) * C), [n, C]);
    const t = targets.subarray(r0, r0 + n);
    const { rowLoss } = crossEntropy(head(part), t);
    for (let i = 0; i < n; i++)
      if (t[i] !== -100) {
        sum += rowLoss[i];
        count++;
      }
  }
  return { sum, count };
}

/** Mean squared error mean((a − b)²) as a scalar; b is a constant target. */
export function mse(a: Tensor, target: Float32Array): Tensor {
  if (a.size !== target.length) throw new RangeError(`mse: ${a.size} values vs ${target.length} targets`);
  let s = 0;
  for (let i = 0; i < a.size; i++) {
    const d = a.data[i] - target[i];
    s += d * d;
  }
  const out = new Tensor(Float32Array.of(s / a.size), [1]);
  return record(out, [a], (g) => {
    const k = (2 * g[0]) / a.size;
    const da = allocRaw(a.size);
    for (let i = 0; i < a.size; i++) da[i] = k * (a.data[i] - target[i]);
    addGrad(a, da);
  });
}

export { EW_ADD, EW_AXPY, EW_MUL, EW_SCALE };
