// The retrain stage on a model folder: attach the saved masks, retrain (or reconstruct), merge the adapters keeping
// exact sparsity, assert it, and export an HF folder (+ masks + perp.json) that transformers loads.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic, writeSafetensors } from "../io/safetensors.js";
import { type LoadedModel, loadModel, saveModel } from "../models/load.js";
import { mergeAdapters, prunableLinears } from "../peft/select.js";
import { MASKS_FILE, masksTensors, readMasks } from "../prune/index.js";
import { assertMasked, zerosOf } from "../prune/mask.js";
import { type RetrainSummary, retrain } from "./loop.js";
import { type BlockReconstruction, type ReconstructOptions, reconstruct } from "./reconstruct.js";

export interface RetrainResult extends RetrainSummary {
  blocks?: BlockReconstruction[];
  /** Reconstruct mode: the per-block MSEs summed before / after (PERP's reconstruction_error_initial / _final). */
  reconstruction_error_initial?: number;
  reconstruction_error_final?: number;
  sparsity_before: number;
  sparsity_after: number;
  masks: "saved" | "inferred-from-zeros" | "none";
  densified: boolean;
  warnings: string[];
}

export function modelSparsity(m: LoadedModel): number {
  let z = 0;
  let n = 0;
  for (const [, l] of prunableLinears(m.model)) {
    z += zerosOf(l.weight.data);
    n += l.weight.size;
  }
  return z / n;
}

/** Attaches masks: the saved bitmaps, else (with a warning) the zeros of a model pruned by another tool. */
export function attachMasks(m: LoadedModel, warn: (s: string) => void): RetrainResult["masks"] {
  const saved = readMasks(m.dir);
  const lins = prunableLinears(m.model);
  if (saved) {
    for (const [n, l] of lins) {
      const mk = saved.get(`${n}.weight`);
      if (mk) l.mask = mk;
    }
    return "saved";
  }
  const sp = modelSparsity(m);
  if (sp < 0.01) {
    warn(`${m.dir} was not pruned (sparsity ${sp.toFixed(4)}): nothing to keep sparse`);
    return "none";
  }
  warn(`${m.dir} has no ${MASKS_FILE}; masks are inferred from its exact zeros (sparsity ${sp.toFixed(4)})`);
  for (const [, l] of lins) l.mask = Uint8Array.from(l.weight.data, (v) => (v === 0 ? 0 : 1));
  return "inferred-from-zeros";
}

export async function retrainModel(
  m: LoadedModel,
  o: ReconstructOptions & { mode?: "retrain" | "reconstruct"; dense?: string },
  log: (s: string) => void = () => {},
): Promise<RetrainResult> {
  const warnings: string[] = [];
  const warn = (s: string) => {
    warnings.push(s);
    log(`warning: ${s}`);
  };
  const masks = attachMasks(m, warn);
  const before = modelSparsity(m);
  let exclude = o.excludeDocs;
  const pj = join(m.dir, "perp.json");
  if (!exclude && existsSync(pj) && (o.dataset ?? "c4") === "c4") {
    const info = JSON.parse(readFileSync(pj, "utf8"));
    exclude = info?.prune?.calibration?.dataset === "c4" ? info.prune.calibration.documents : undefined;
  }
  let summary: RetrainSummary &
    Pick<RetrainResult, "blocks" | "reconstruction_error_initial" | "reconstruction_error_final">;
  if (o.mode === "reconstruct") {
    const dense = o.dense ?? (existsSync(pj) ? JSON.parse(readFileSync(pj, "utf8")).source_model : undefined);
    if (!dense)
      throw new Error(`${m.dir}: reconstruct mode needs the dense model (perp.json has no source_model; pass --dense)`);
    if (!m.tokenizer) throw new Error(`${m.dir}: reconstruct mode needs tokenizer.json`);
    let params = o.params;
    if (params.includes("head")) {
      // Nothing of the head is inside a block; PERP's reconstruct skips it the same way (and trains no head).
      warn("reconstruct mode trains block by block: the LM head is not in a block and is left as it is (as PERP does)");
      params = params.filter((p) => p !== "head");
    }
    if (!params.length) throw new Error("reconstruct mode: nothing left to train inside the blocks");
    const teacher = await loadModel(dense);
    summary = await reconstruct(m, teacher, m.tokenizer, { ...o, params });
  } else summary = await retrain(m, { ...o, excludeDocs: exclude });
  const { densified } = mergeAdapters(m.model);
  if (densified)
    warn("plain LoRA merged W + s·BA into pruned weights: the merged model is dense at the pruned positions");
  const lins = prunableLinears(m.model);
  if (!densified) for (const [n, l] of lins) if (l.mask) assertMasked(n, l.weight.data, l.mask);
  const after = modelSparsity(m);
  saveModel(o.out, m);
  const shapes = new Map(lins.map(([n, l]) => [`${n}.weight`, l.weight.shape]));
  const mk = new Map(lins.filter(([, l]) => l.mask).map(([n, l]) => [`${n}.weight`, l.mask as Uint8Array]));
  if (mk.size && !densified) {
    const { tensors, meta } = masksTensors(mk, shapes);
    writeSafetensors(join(o.out, MASKS_FILE), tensors, meta);
  }
  const result: RetrainResult = {
    ...summary,
    sparsity_before: before,
    sparsity_after: after,
    masks,
    densified,
    warnings,
  };
  const prev = existsSync(pj) ? JSON.parse(readFileSync(pj, "utf8")) : {};
  writeFileAtomic(join(o.out, "perp.json"), [
    `${JSON.stringify({ ...prev, source_model: m.dir, retrain: { settings: o, result } }, null, 2)}\n`,
  ]);
  return result;
}
