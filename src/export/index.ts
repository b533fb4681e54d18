// exportModel(): the two export forms of a (pruned / retrained) model — an HF folder with exact zeros that transformers
// loads unchanged, and the compressed-tensors sparse checkpoint — with the size table of both.
import { join } from "node:path";
import { type LoadedModel, saveModel } from "../models/load.js";
import { type ExportSizes, exportCompressed } from "./compressed.js";

export interface ExportOptions {
  dense?: boolean;
  compressed?: boolean;
}

export function exportModel(
  out: string,
  m: LoadedModel,
  o: ExportOptions = {},
): { dense_dir?: string; compressed_dir?: string; sizes?: ExportSizes } {
  const r: { dense_dir?: string; compressed_dir?: string; sizes?: ExportSizes } = {};
  if (o.dense !== false) {
    r.dense_dir = join(out, "dense");
    saveModel(r.dense_dir, m);
  }
  if (o.compressed !== false) {
    r.compressed_dir = join(out, "compressed");
    r.sizes = exportCompressed(r.compressed_dir, m);
  }
  return r;
}
