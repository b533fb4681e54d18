// The block loop, written once: block i is calibrated on the outputs of the already-pruned blocks < i; all of its
// prunable linears are scored from one pass of the (still dense) block, pruned, and the pruned block's outputs become
// the next block's inputs (wanda prune_wanda / sparsegpt llama_sequential). Only one block's inputs, outputs and
// statistics are alive at a time.
import { Progress } from "../cli/progress.js";
import type { CausalLM } from "../models/registry.js";
import type { Linear } from "../nn/layers.js";
import { noGrad } from "../nn/tape.js";
import { Arena, allocRaw, withArena } from "../tensor/arena.js";
import { gramLower } from "../tensor/linalg.js";
import { K } from "../tensor/native.js";
import { Rng } from "../tensor/rng.js";
import { Tensor } from "../tensor/tensor.js";
import type { Calibration } from "./calibration.js";
import { countZeros, transpose } from "./mask.js";
import type { LayerStats, PruneMethod, PruneSpec } from "./methods.js";

export interface LayerReport {
  name: string;
  shape: number[];
  sparsity: number;
  seconds: number;
  info?: Record<string, number>;
}

export interface SequentialOptions {
  method: PruneMethod;
  spec: PruneSpec;
  seed: number;
  calibration: Calibration | null;
  /** Calibration samples per forward call. */
  batch?: number;
  progress?: boolean;
}

export interface SequentialResult {
  layers: LayerReport[];
  masks: Map<string, Uint8Array>;
  blockSeconds: number[];
}

function pruneLinear(
  name: string,
  lin: Linear,
  o: SequentialOptions,
  stats: LayerStats | null,
  rng: Rng,
  masks: Map<string, Uint8Array>,
): LayerReport {
  const t0 = performance.now();
  const [a, b] = lin.weight.shape;
  // Methods see (out, in); GPT-2 Conv1D weights are stored (in, out).
  const [rows, cols] = lin.inOut ? [b, a] : [a, b];
  const W = lin.inOut ? transpose(lin.weight.data, a, b) : lin.weight.data.slice();
  let out: ReturnType<PruneMethod["prune"]>;
  try {
    out = o.method.prune(W, rows, cols, o.spec, stats, rng, name);
  } catch (e) {
    const msg = (e as Error).message;
    if (e instanceof Error && !msg.startsWith(`${name}:`)) e.message = `${name}: ${msg}`; // say which layer
    throw e;
  }
  const Wn = lin.inOut ? transpose(out.W, rows, cols) : out.W;
  const mask = lin.inOut ? transpose(out.mask, rows, cols) : out.mask;
  lin.weight.data = Wn;
  lin.mask = mask;
  masks.set(`${name}.weight`, mask);
  return {
    name,
    shape: [a, b],
    sparsity: countZeros(mask) / mask.length,
    seconds: (performance.now() - t0) / 1000,
    info: out.info,
  };
}

/** Accumulates calibration statistics from a linear's inputs, sharing them between linears fed the same tensor. */
function attachStats(
  lins: [string, Linear][],
  kind: "colnorm" | "hessian",
): { stats: Map<string, LayerStats>; detach: () => void } {
  const stats = new Map<string, LayerStats>();
  const byInput = new WeakMap<Tensor, LayerStats>();
  for (const [name, lin] of lins) {
    const cols = lin.inOut ? lin.weight.shape[0] : lin.weight.shape[1];
    lin.inputHook = (x: Tensor) => {
      let st = byInput.get(x);
      if (!st) {
        const n = x.size / cols;
        st = { tokens: n };
        if (kind === "colnorm") {
          const c = new Float64Array(cols);
          K.colSumsq(c, x.data, n, cols);
          st.colsq = c;
        } else {
          st.xtx = gramLower(x.data, n, cols);
        }
        byInput.set(x, st);
      }
      const acc = stats.get(name);
      if (!acc) {
        stats.set(name, { tokens: st.tokens, colsq: st.colsq?.slice(), xtx: st.xtx?.slice() });
      } else {
        acc.tokens += st.tokens;
        if (st.colsq && acc.colsq) for (let j = 0; j < cols; j++) acc.colsq[j] += st.colsq[j];
        if (st.xtx && acc.xtx) K.ew(2, acc.xtx, st.xtx, null, 1);
      }
    };
  }
  return {
    stats,
    detach: () => {
      for (const [, l] of lins) l.inputHook = null;
    },
  };
}

/**
 * Block i over N windows of L tokens (X: N·L rows), bt windows per forward, into `out` (null: a statistics pass that
 * keeps no outputs). The activations live in `arena`, reused from batch to batch and block to block: a fresh buffer
 * costs a page fault per 4 KiB and a zeroing pass (pruning a llama768 block took 25-35% longer with them).
 */
export function blockOutputs(
  model: CausalLM,
  i: number,
  X: Float32Array,
  N: number,
  L: number,
  bt: number,
  arena: Arena,
  out: Float32Array | null,
): void {
  const C = X.length / (N * L);
  noGrad(() => {
    for (let s = 0; s < N; s += bt) {
      const b = Math.min(bt, N - s);
      withArena(arena, () => {
        const x = allocRaw(b * L * C);
        x.set(X.subarray(s * L * C, (s + b) * L * C));
        const y = model.runBlock(i, new Tensor(x, [b * L, C]), b, L);
        out?.set(y.data, s * L * C);
      });
    }
  });
}

export function pruneSequential(model: CausalLM, o: SequentialOptions): SequentialResult {
  const rng = new Rng(o.seed);
  const masks = new Map<string, Uint8Array>();
  const layers: LayerReport[] = [];
  const blockSeconds: number[] = [];
  const nb = model.numBlocks;
  const bar = o.progress ? new Progress(`prune ${o.method.name}`, nb, "block") : null;
  const cal = o.calibration;
  const needs = o.method.stats !== "none";
  if (needs && !cal) throw new Error(`${o.method.name} needs calibration data`);
  const L = cal?.seqlen ?? 0;
  const N = cal?.samples ?? 0;
  const Bt = Math.max(1, Math.min(o.batch ?? 8, N || 1));
  // current block inputs for every calibration sample: (N·L, C)
  let inps: Float32Array | null = null;
  // inps, outs = outs, inps, as the references swap them: the pruned block's outputs go to the previous inputs' buffer
  const arena = new Arena();
  let spare: Float32Array | null = null;
  if (needs && cal) {
    inps = noGrad(() => model.embed(cal.ids, N, L)).data;
  }
  for (let i = 0; i < nb; i++) {
    const t0 = performance.now();
    const lins = model.blockLinears(i);
    let stats: Map<string, LayerStats> | null = null;
    if (needs && inps) {
      const h = attachStats(lins, o.method.stats as "colnorm" | "hessian");
      try {
        blockOutputs(model, i, inps, N, L, Bt, arena, null);
      } finally {
        h.detach();
      }
      stats = h.stats;
    }
    for (const [name, lin] of lins) layers.push(pruneLinear(name, lin, o, stats?.get(name) ?? null, rng, masks));
    stats = null;
    if (needs && inps) {
      const next: Float32Array = spare?.length === inps.length ? spare : new Float32Array(inps.length);
      blockOutputs(model, i, inps, N, L, Bt, arena, next);
      spare = inps;
      inps = next;
    }
    blockSeconds.push((performance.now() - t0) / 1000);
    bar?.tick(
      1,
      `sparsity ${(layers.slice(-lins.length).reduce((a, l) => a + l.sparsity, 0) / lins.length).toFixed(3)}`,
    );
  }
  bar?.end();
  return { layers, masks, blockSeconds };
}
