// prune(): resolve settings, draw calibration windows, run the block loop; savePruned(): an HF folder with exact
// zeros + perp.json (settings, per-layer sparsity, timings) + perp-masks.safetensors (the masks as packed bitmaps),
// written into a temporary folder and renamed into place, so the output is never half-written.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { SafetensorsFile, type TensorOut, writeFileAtomic, writeSafetensors } from "../io/safetensors.js";
import type { LoadedModel } from "../models/load.js";
import { saveModel } from "../models/load.js";
import type { CausalLM } from "../models/registry.js";
import { type Calibration, calibrationWindows } from "./calibration.js";
import { assertMasked, checkSparsity, PruneError, packMask, parsePattern, type Scope, unpackMask } from "./mask.js";
import { getMethod } from "./methods.js";
import { type LayerReport, pruneSequential } from "./sequential.js";

export interface PruneOptions {
  method: string;
  sparsity: number;
  pattern?: string;
  scope?: Scope;
  calibSamples?: number;
  calibSeqlen?: number;
  calibDataset?: string;
  seed?: number;
  batch?: number;
  progress?: boolean;
}

export interface PruneReport {
  method: string;
  sparsity_target: number;
  pattern: string;
  scope: Scope | "block128";
  seed: number;
  /** documents: the indices of the documents drawn from (c4, .jsonl, .parquet); token_starts: where each window
   * starts in a continuous text's token stream (wikitext2, tinystories, .txt). */
  calibration: {
    dataset: string;
    samples: number;
    seqlen: number;
    documents?: number[];
    token_starts?: number[];
  } | null;
  sparsity: number;
  layers: LayerReport[];
  seconds: { calibration_data: number; prune: number; blocks: number[] };
}

export async function prune(
  m: LoadedModel,
  o: PruneOptions,
): Promise<{ report: PruneReport; masks: Map<string, Uint8Array> }> {
  const method = getMethod(o.method);
  const nm = parsePattern(o.pattern);
  if (!nm) checkSparsity(o.sparsity);
  const sparsity = nm ? 1 - nm.n / nm.m : o.sparsity;
  const scope = o.scope ?? method.defaultScope;
  if (scope !== "matrix" && scope !== "row") throw new PruneError(`scope must be 'matrix' or 'row' (got ${scope})`);
  const seed = o.seed ?? 0;
  const t0 = performance.now();
  let cal: Calibration | null = null;
  if (method.stats !== "none") {
    if (!m.tokenizer) throw new PruneError(`${m.dir}: ${method.name} needs a tokenizer for calibration data`);
    const seqlen = o.calibSeqlen ?? Math.min(m.model.maxContext, 2048);
    if (seqlen > m.model.maxContext)
      throw new PruneError(`calib-seqlen ${seqlen} exceeds the model's context ${m.model.maxContext}`);
    cal = await calibrationWindows(m.tokenizer, {
      samples: o.calibSamples ?? 128,
      seqlen,
      seed,
      source: o.calibDataset ?? "c4",
    });
  }
  const t1 = performance.now();
  const r = pruneSequential(m.model, {
    method,
    spec: { sparsity, nm, scope },
    seed,
    calibration: cal,
    batch: o.batch,
    progress: o.progress,
  });
  const t2 = performance.now();
  let zeros = 0;
  let total = 0;
  for (const l of r.layers) {
    const n = l.shape[0] * l.shape[1];
    zeros += l.sparsity * n;
    total += n;
  }
  assertModelMasks(m.model, r.masks);
  return {
    masks: r.masks,
    report: {
      method: method.name,
      sparsity_target: sparsity,
      pattern: nm ? `${nm.n}:${nm.m}` : "unstructured",
      scope: method.name === "sparsegpt" && !nm ? "block128" : scope,
      seed,
      calibration: cal
        ? {
            dataset: o.calibDataset ?? "c4",
            samples: cal.samples,
            seqlen: cal.seqlen,
            ...(cal.starts ? { token_starts: cal.starts } : { documents: cal.docIndices }),
          }
        : null,
      sparsity: zeros / total,
      layers: r.layers,
      seconds: { calibration_data: (t1 - t0) / 1000, prune: (t2 - t1) / 1000, blocks: r.blockSeconds },
    },
  };
}

/** Every masked-out weight of every prunable linear is exactly 0.0. */
export function assertModelMasks(model: CausalLM, masks: Map<string, Uint8Array>): void {
  for (let i = 0; i < model.numBlocks; i++)
    for (const [name, lin] of model.blockLinears(i)) {
      const mk = masks.get(`${name}.weight`);
      if (mk) assertMasked(name, lin.weight.data, mk);
    }
}

export const MASKS_FILE = "perp-masks.safetensors";

export function masksTensors(
  masks: Map<string, Uint8Array>,
  shapes: Map<string, number[]>,
): { tensors: TensorOut[]; meta: Record<string, string> } {
  const tensors: TensorOut[] = [];
  const meta: Record<string, string> = { format: "perp-mask-bitmap-v1", bitorder: "little" };
  for (const [name, mask] of masks) {
    const bits = packMask(mask);
    tensors.push({ name, dtype: "U8", shape: [bits.length], data: bits });
    meta[name] = JSON.stringify(shapes.get(name));
  }
  return { tensors, meta };
}

/** Masks saved next to a pruned model (null if the folder has none). */
export function readMasks(dir: string): Map<string, Uint8Array> | null {
  const p = join(dir, MASKS_FILE);
  if (!existsSync(p)) return null;
  const f = new SafetensorsFile(p);
  const out = new Map<string, Uint8Array>();
  for (const name of f.names) {
    const shape = JSON.parse(f.metadata[name] ?? "null") as number[] | null;
    if (!shape) throw new PruneError(`${p}: no shape recorded for mask '${name}'`);
    out.set(
      name,
      unpackMask(
        f.bytes(name),
        shape.reduce((a, b) => a * b, 1),
      ),
    );
  }
  return out;
}

/** Writes the pruned model, perp.json and the masks into `out` atomically (temp folder + rename). */
export function savePruned(
  out: string,
  m: LoadedModel,
  report: PruneReport,
  masks: Map<string, Uint8Array>,
  extra: Record<string, unknown> = {},
): void {
  if (existsSync(out) && readdirSync(out).length)
    throw new PruneError(`${out} already exists and is not empty (choose another --out)`);
  const parent = dirname(out);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(out)}.tmp-${process.pid}-${Date.now()}`);
  try {
    saveModel(tmp, m);
    const shapes = new Map<string, number[]>();
    for (let i = 0; i < m.model.numBlocks; i++)
      for (const [n, l] of m.model.blockLinears(i)) shapes.set(`${n}.weight`, l.weight.shape);
    const { tensors, meta } = masksTensors(masks, shapes);
    writeSafetensors(join(tmp, MASKS_FILE), tensors, meta);
    writeFileAtomic(join(tmp, "perp.json"), [
      `${JSON.stringify({ perp_version: 1, source_model: m.dir, prune: report, ...extra }, null, 2)}\n`,
    ]);
    if (existsSync(out)) rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
