// Compressed sparse export in the compressed-tensors convention that llm-compressor and vLLM read
// (neuralmagic/compressed-tensors sparse_bitmask.py / sparse_24_bitmask.py): for each pruned Linear weight
//   sparse-bitmask:     <p>.shape (I64 [2]), <p>.compressed (1-D nonzeros, row-major), <p>.bitmask (U8 rows x ⌈cols/8⌉,
//                       numpy packbits bitorder=little along the last axis), <p>.row_offsets (I64 [rows])
//   sparse-24-bitmask:  <p>.shape (I64 [2, 1]), <p>.compressed (rows x cols/2: the 2 largest-|w| of every 4), <p>.bitmask
// and config.json gains quantization_config.sparsity_config. Everything else stays dense. Conv1D (GPT-2) weights are
// not nn.Linear and stay dense.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type DType, SafetensorsStore, saveCheckpoint, type TensorOut, writeFileAtomic } from "../io/safetensors.js";
import type { LoadedModel } from "../models/load.js";
import { copyTokenizerFiles, stateDict } from "../models/load.js";
import type { CausalLM } from "../models/registry.js";
import type { Linear } from "../nn/layers.js";
import { prunableLinears } from "../peft/select.js";
import { detectNM, zerosOf } from "../prune/mask.js";

export type SparseFormat = "sparse-bitmask" | "sparse-24-bitmask";

function i64(values: number[]): Uint8Array {
  const b = new BigInt64Array(values.map((v) => BigInt(v)));
  return new Uint8Array(b.buffer);
}

function packRow(mask: (j: number) => boolean, cols: number, out: Uint8Array, off: number): void {
  for (let j = 0; j < cols; j++) if (mask(j)) out[off + (j >> 3)] |= 1 << (j & 7);
}

/** Compresses one (rows x cols) float32 weight. */
export function compressWeight(
  prefix: string,
  w: Float32Array,
  rows: number,
  cols: number,
  format: SparseFormat,
  dtype: DType,
): TensorOut[] {
  const bpr = Math.ceil(cols / 8);
  const bitmask = new Uint8Array(rows * bpr);
  const vals: number[] = [];
  const offsets: number[] = [];
  if (format === "sparse-bitmask") {
    for (let r = 0; r < rows; r++) {
      offsets.push(vals.length);
      packRow((j) => w[r * cols + j] !== 0, cols, bitmask, r * bpr);
      for (let j = 0; j < cols; j++) if (w[r * cols + j] !== 0) vals.push(w[r * cols + j]);
    }
  } else {
    if (cols % 4) throw new Error(`${prefix}: 2:4 export needs cols divisible by 4`);
    for (let r = 0; r < rows; r++) {
      const keep = new Uint8Array(cols);
      for (let g = 0; g < cols; g += 4) {
        // the two largest |w| of the group (torch.topk(2) on abs; ties → lower index)
        const idx = [0, 1, 2, 3]
          .sort((a, b) => Math.abs(w[r * cols + g + b]) - Math.abs(w[r * cols + g + a]) || a - b)
          .slice(0, 2);
        for (const k of idx) keep[g + k] = 1;
        for (let k = 0; k < 4; k++)
          if (w[r * cols + g + k] !== 0 && !keep[g + k]) throw new Error(`${prefix}: row ${r} is not 2:4 sparse`);
      }
      packRow((j) => keep[j] === 1, cols, bitmask, r * bpr);
      for (let j = 0; j < cols; j++) if (keep[j]) vals.push(w[r * cols + j]);
    }
  }
  const values = Float32Array.from(vals);
  const out: TensorOut[] = [
    {
      name: `${prefix}.shape`,
      dtype: "I64",
      shape: format === "sparse-bitmask" ? [2] : [2, 1],
      data: i64([rows, cols]),
    },
    {
      name: `${prefix}.compressed`,
      dtype,
      shape: format === "sparse-bitmask" ? [values.length] : [rows, cols / 2],
      data: values,
    },
    { name: `${prefix}.bitmask`, dtype: "U8", shape: [rows, bpr], data: bitmask },
  ];
  if (format === "sparse-bitmask")
    out.push({ name: `${prefix}.row_offsets`, dtype: "I64", shape: [rows], data: i64(offsets) });
  return out;
}

/** Decompresses the weights of a compressed checkpoint folder into dense float32 arrays by weight name. */
export function decompressFolder(dir: string): Map<string, Float32Array> {
  const st = new SafetensorsStore(dir);
  const out = new Map<string, Float32Array>();
  for (const name of st.names) {
    if (!name.endsWith(".bitmask")) continue;
    const p = name.slice(0, -".bitmask".length);
    const shape = new BigInt64Array(st.file(`${p}.shape`).bytes(`${p}.shape`).slice().buffer);
    const [rows, cols] = [Number(shape[0]), Number(shape[1])];
    const bits = st.file(name).bytes(name);
    const vals = st.f32(`${p}.compressed`);
    const bpr = Math.ceil(cols / 8);
    const w = new Float32Array(rows * cols);
    let k = 0;
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < cols; j++) if ((bits[r * bpr + (j >> 3)] >> (j & 7)) & 1) w[r * cols + j] = vals[k++];
    if (k !== vals.length) throw new Error(`${dir}: ${p}: bitmask has ${k} ones but ${vals.length} values`);
    out.set(`${p}.weight`, w);
  }
  return out;
}

export interface ExportSizes {
  dense_bytes: number;
  compressed_bytes: number;
  format: SparseFormat;
}

/** The pruned layers compressed-tensors compresses: nn.Linear ones (GPT-2's Conv1D weights stay dense). */
export function compressibleLinears(model: CausalLM): [string, Linear][] {
  return prunableLinears(model).filter(([, l]) => !l.inOut);
}

export const NOTHING_TO_COMPRESS =
  "no nn.Linear among the pruned layers (GPT-2's are Conv1D, which compressed-tensors leaves dense)";

/** Writes the compressed checkpoint + config (with sparsity_config) + tokenizer files into `dir`. */
export function exportCompressed(dir: string, m: LoadedModel): ExportSizes {
  mkdirSync(dir, { recursive: true });
  const lins = new Map(compressibleLinears(m.model).map(([n, l]) => [`${n}.weight`, l]));
  if (!lins.size) throw new Error(`compressed export: ${NOTHING_TO_COMPRESS}`);
  let nm24 = true;
  let zeros = 0;
  let total = 0;
  for (const [, l] of lins) {
    const [rows, cols] = l.weight.shape;
    const nm = detectNM(l.weight.data, rows, cols);
    if (!(nm && nm.m === 4 && nm.n <= 2)) nm24 = false;
    zeros += zerosOf(l.weight.data);
    total += l.weight.size;
  }
  const format: SparseFormat = nm24 ? "sparse-24-bitmask" : "sparse-bitmask";
  const tensors: TensorOut[] = [];
  let dense = 0;
  let comp = 0;
  const bytesOf = (t: TensorOut) =>
    t.shape.reduce((a, b) => a * b, 1) * (t.dtype === "I64" ? 8 : t.dtype === "U8" ? 1 : t.dtype === "F32" ? 4 : 2);
  for (const t of stateDict(m.model, m.dtypes)) {
    const lin = lins.get(t.name);
    dense += bytesOf(t);
    if (!lin) {
      tensors.push(t);
      comp += bytesOf(t);
      continue;
    }
    const [rows, cols] = lin.weight.shape;
    const parts = compressWeight(t.name.slice(0, -".weight".length), lin.weight.data, rows, cols, format, t.dtype);
    tensors.push(...parts);
    for (const p of parts) comp += bytesOf(p);
  }
  saveCheckpoint(dir, tensors);
  copyTokenizerFiles(m.dir, dir);
  const config = {
    ...m.config,
    quantization_config: {
      quant_method: "compressed-tensors",
      format,
      version: "0.9.0",
      sparsity_config: {
        format,
        global_sparsity: zeros / total,
        sparsity_structure: nm24 ? "2:4" : "unstructured",
        targets: ["Linear"],
        ignore: ["lm_head"],
        registry_requires_subclass: false,
      },
    },
  };
  writeFileAtomic(join(dir, "config.json"), [`${JSON.stringify(config, null, 2)}\n`]);
  return { dense_bytes: dense, compressed_bytes: comp, format };
}
