// inspect(): per-layer and overall sparsity of the prunable linears (zeros ÷ weights), N:M validity, parameter counts,
// and agreement with saved masks.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadModel } from "../models/load.js";
import { readMasks } from "./index.js";
import { detectNM, transpose, zerosOf } from "./mask.js";

export interface InspectLayer {
  name: string;
  shape: number[];
  sparsity: number;
  nm: string | null;
  masked?: boolean;
}

export interface InspectResult {
  model: string;
  model_type: string;
  sparsity: number;
  layers: InspectLayer[];
  parameters: { total: number; prunable: number; prunable_nonzero: number; other: number };
  masks: boolean;
  masks_hold: boolean | null;
  perp: unknown;
}

export async function inspect(dir: string): Promise<InspectResult> {
  const m = await loadModel(dir, { tokenizer: false });
  const masks = readMasks(m.dir);
  const layers: InspectLayer[] = [];
  let zeros = 0;
  let prunable = 0;
  let masksHold = masks ? true : null;
  for (let i = 0; i < m.model.numBlocks; i++)
    for (const [name, lin] of m.model.blockLinears(i)) {
      const w = lin.weight.data;
      const [a, b] = lin.weight.shape;
      const z = zerosOf(w);
      zeros += z;
      prunable += w.length;
      const [rows, cols] = lin.inOut ? [b, a] : [a, b];
      const nm = detectNM(lin.inOut ? transpose(w, a, b) : w, rows, cols);
      const layer: InspectLayer = { name, shape: [a, b], sparsity: z / w.length, nm: nm ? `${nm.n}:${nm.m}` : null };
      const mk = masks?.get(`${name}.weight`);
      if (mk) {
        let ok = true;
        for (let j = 0; j < w.length; j++) if (!mk[j] && w[j] !== 0) ok = false;
        layer.masked = ok;
        if (!ok) masksHold = false;
      }
      layers.push(layer);
    }
  const total = m.model.parameters().reduce((s, p) => s + p.size, 0);
  const pj = join(m.dir, "perp.json");
  return {
    model: dir,
    model_type: String(m.config.model_type),
    sparsity: zeros / prunable,
    layers,
    parameters: { total, prunable, prunable_nonzero: prunable - zeros, other: total - prunable },
    masks: !!masks,
    masks_hold: masksHold,
    perp: existsSync(pj) ? JSON.parse(readFileSync(pj, "utf8")) : null,
  };
}
