// The pruning methods, one object each of a fixed shape (DESIGN: score and selection apart; the block loop exists once
// in sequential.ts). Every method sees W as (out, in); Conv1D weights are transposed around it by the caller.
//  - magnitude (PERP): score |W|, compared over the whole matrix by default.
//  - random (PERP): seeded uniform scores.
//  - wanda (arXiv 2306.11695, locuslab/wanda lib/prune.py): score |W_ij|·‖X_j‖₂, compared per output row.
//  - sparsegpt (arXiv 2301.00774, IST-DASLab/sparsegpt sparsegpt.py): see sparsegpt.ts.
import type { Rng } from "../tensor/rng.js";
import { type NM, type Scope, selectMask } from "./mask.js";
import { sparsegptPrune } from "./sparsegpt.js";

export type StatsKind = "none" | "colnorm" | "hessian";

export interface LayerStats {
  /** Σ over calibration tokens of x_j² (wanda). */
  colsq?: Float64Array;
  /** Σ x xᵀ over calibration tokens, (in x in) (sparsegpt). */
  xtx?: Float32Array;
  tokens: number;
}

export interface PruneSpec {
  sparsity: number;
  nm: NM | null;
  scope: Scope;
}

export interface PruneOutput {
  /** The pruned (and, for sparsegpt, updated) weight, (out, in). */
  W: Float32Array;
  mask: Uint8Array;
  /** Method-specific diagnostics (e.g. SparseGPT's reconstruction error). */
  info?: Record<string, number>;
}

export interface PruneMethod {
  name: string;
  stats: StatsKind;
  defaultScope: Scope;
  prune(
    W: Float32Array,
    rows: number,
    cols: number,
    spec: PruneSpec,
    stats: LayerStats | null,
    rng: Rng,
    layer: string,
  ): PruneOutput;
}

function applyMask(W: Float32Array, mask: Uint8Array): Float32Array {
  const out = W.slice();
  for (let i = 0; i < out.length; i++) if (!mask[i]) out[i] = 0;
  return out;
}

export const magnitude: PruneMethod = {
  name: "magnitude",
  stats: "none",
  defaultScope: "matrix",
  prune(W, rows, cols, spec) {
    const mask = selectMask(W.map(Math.abs), rows, cols, spec.sparsity, spec.scope, spec.nm);
    return { W: applyMask(W, mask), mask };
  },
};

export const random: PruneMethod = {
  name: "random",
  stats: "none",
  defaultScope: "matrix",
  prune(W, rows, cols, spec, _stats, rng) {
    const scores = new Float32Array(W.length);
    for (let i = 0; i < scores.length; i++) scores[i] = rng.uniform();
    const mask = selectMask(scores, rows, cols, spec.sparsity, spec.scope, spec.nm);
    return { W: applyMask(W, mask), mask };
  },
};

export const wanda: PruneMethod = {
  name: "wanda",
  stats: "colnorm",
  defaultScope: "row",
  prune(W, rows, cols, spec, stats) {
    const colsq = stats?.colsq;
    if (!colsq || colsq.length !== cols) throw new Error("wanda: missing calibration statistics");
    const norm = Float32Array.from(colsq, (v) => Math.sqrt(v));
    const scores = new Float32Array(W.length);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) scores[r * cols + c] = Math.abs(W[r * cols + c]) * norm[c];
    const mask = selectMask(scores, rows, cols, spec.sparsity, spec.scope, spec.nm);
    return { W: applyMask(W, mask), mask };
  },
};

export const sparsegpt: PruneMethod = {
  name: "sparsegpt",
  stats: "hessian",
  defaultScope: "matrix",
  prune(W, rows, cols, spec, stats, _rng, layer) {
    if (!stats?.xtx) throw new Error("sparsegpt: missing calibration statistics");
    return sparsegptPrune(W, rows, cols, stats.xtx, stats.tokens, spec, layer);
  },
};

export const METHODS: Record<string, PruneMethod> = { magnitude, random, wanda, sparsegpt };

export function getMethod(name: string): PruneMethod {
  const m = METHODS[name];
  if (!m) throw new Error(`unknown pruning method '${name}' (available: ${Object.keys(METHODS).join(", ")})`);
  return m;
}
