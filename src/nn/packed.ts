// Frozen weights packed once for the GEMM. Every GEMM packs its B operand into the micro-kernel's panel layout; for a
// weight that PEFT retraining keeps frozen that is the same work at every step, twice (y = x Wᵀ and dX = dY W), and it
// reads the weight from DRAM each time. packFrozenWeights() does it once, up front, at the cost of two f32 copies of
// each frozen linear weight; the numbers do not change (same panels, same kernel, same order of operations).
import { freemem, totalmem } from "node:os";
import { isNative, K } from "../tensor/native.js";
import { Linear } from "./layers.js";
import type { Module } from "./module.js";

/** "auto": pack when the copies fit in a quarter of the machine's memory (and half of what is free); "on"; "off". */
export type PackPolicy = "auto" | "on" | "off";
export const PACK_POLICIES: readonly PackPolicy[] = ["auto", "on", "off"];

export interface PackReport {
  /** Weights packed (0 when the policy or the memory said no). */
  weights: number;
  /** Bytes the packed copies take (or would have taken). */
  bytes: number;
}

/** Linears whose forward multiplies by the stored weight itself (no adapter-dependent effective weight), frozen. */
function packable(model: Module): Linear[] {
  const out: Linear[] = [];
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof Linear) || m.weight.requiresGrad) continue;
    const t = m.lora?.type;
    if (t === undefined || t === "lora" || t === "lora_prune") out.push(m);
  }
  return out;
}

function packedBytes(l: Linear, nr: number): number {
  const r = l.lora?.r ?? 0;
  const pad = (n: number) => Math.ceil(n / nr) * nr;
  return 4 * (pad(l.outFeatures) * (l.inFeatures + r) + pad(l.inFeatures) * (l.outFeatures + r) + 32);
}

/** Packs the frozen linear weights of `model` (see the file comment); undo with unpackWeights before changing them. */
export function packFrozenWeights(model: Module, policy: PackPolicy = "auto"): PackReport {
  const ls = isNative && policy !== "off" ? packable(model) : [];
  const nr = K.cpu().nr;
  const bytes = ls.reduce((a, l) => a + packedBytes(l, nr), 0);
  if (!ls.length || (policy === "auto" && bytes > Math.min(totalmem() / 4, freemem() / 2)))
    return { weights: 0, bytes };
  for (const l of ls) {
    const W = l.weight;
    const src = W.half ? W.half.bits : W.data;
    const bt = W.half ? W.half.dtype : "f32";
    const k2 = l.lora?.r ?? 0;
    W.packed = {
      fwd: K.gemmPack(src, l.inFeatures, l.outFeatures, !l.inOut, bt, k2), // op(B) = Wᵀ: (in, out)
      bwd: K.gemmPack(src, l.outFeatures, l.inFeatures, l.inOut, bt, k2), // op(B) = W: (out, in)
      k2,
    };
  }
  return { weights: ls.length, bytes };
}

/** Drops every packed copy in `model` (before its weights change: merging adapters, pruning, loading). */
export function unpackWeights(model: Module): void {
  for (const [, m] of model.namedModules()) if (m instanceof Linear) m.weight.packed = null;
}
