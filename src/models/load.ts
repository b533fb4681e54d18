// Load an HF model folder (config.json + safetensors + tokenizer) into a family module, and save it back with the
// same names, shapes and dtypes (so load → save is bit-exact).
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { resolveModel } from "../io/hf-hub.js";
import { type DType, SafetensorsStore, saveCheckpoint, type TensorOut, writeFileAtomic } from "../io/safetensors.js";
import { Tokenizer } from "../io/tokenizer.js";
import type { Tensor } from "../tensor/tensor.js";
import { buildModel, type CausalLM, ConfigError, type HfConfig } from "./registry.js";

/** Buffers some checkpoints carry that are not parameters (recomputed from the config). */
const IGNORED = [
  /\.rotary_emb\.inv_freq$/,
  /\.attn\.bias$/,
  /\.attn\.masked_bias$/,
  /\.attention\.bias$/,
  /\.attention\.masked_bias$/,
];

export interface LoadedModel {
  model: CausalLM;
  config: HfConfig;
  tokenizer: Tokenizer | null;
  dir: string;
  /** The file dtype of every loaded tensor (saving writes it back in the same dtype). */
  dtypes: Map<string, DType>;
  /** Tensors in the files that the model does not use. */
  unused: string[];
}

export function readConfig(dir: string): HfConfig {
  const p = join(dir, "config.json");
  if (!existsSync(p)) throw new ConfigError(`${dir}: missing config.json`);
  try {
    return JSON.parse(readFileSync(p, "utf8")) as HfConfig;
  } catch (e) {
    throw new ConfigError(`${p}: invalid JSON (${(e as Error).message})`);
  }
}

/** Copies tensors from `store` into the model's parameters (zero-copy views for F32 files). */
export function loadWeights(
  model: CausalLM,
  store: SafetensorsStore,
  dir: string,
): { dtypes: Map<string, DType>; unused: string[] } {
  const dtypes = new Map<string, DType>();
  const used = new Set<string>();
  const params = [...model.namedParameters()];
  // A checkpoint saved from the base model (gpt2's, facebook/opt's) names its tensors without the base model's prefix
  // ("h.0.attn.c_attn.weight" for "transformer.h.0.attn.c_attn.weight"); transformers adds it, and so do we.
  const counts = new Map<string, number>();
  for (const [name] of params) counts.set(name.split(".")[0], (counts.get(name.split(".")[0]) ?? 0) + 1);
  const base = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "";
  const unprefixed = !store.names.some((n) => n.startsWith(`${base}.`));
  const fileName = (name: string) =>
    unprefixed && name.startsWith(`${base}.`) && store.has(name.slice(base.length + 1))
      ? name.slice(base.length + 1)
      : name;
  for (const [name, p] of params) {
    const f = fileName(name);
    if (!store.has(f))
      throw new ConfigError(
        `${dir}: tensor '${name}' required by config.json (model_type ${model.config.model_type}) is missing from the checkpoint`,
      );
    const info = store.info(f);
    if (info.shape.length !== p.shape.length || info.shape.some((d, i) => d !== p.shape[i]))
      throw new ConfigError(`${dir}: tensor '${f}' has shape [${info.shape}] but config.json implies [${p.shape}]`);
    p.data = store.f32(f);
    dtypes.set(name, info.dtype);
    used.add(f);
  }
  const unused = store.names.filter(
    (n) => !used.has(n) && !model.tiedNames.includes(n) && !IGNORED.some((r) => r.test(n)),
  );
  return { dtypes, unused };
}

/** Resolves `idOrDir` (folder, HF cache, Hub) and loads config, weights and tokenizer. */
export async function loadModel(
  idOrDir: string,
  opts: { revision?: string; tokenizer?: boolean } = {},
): Promise<LoadedModel> {
  const dir = await resolveModel(idOrDir, { revision: opts.revision });
  const config = readConfig(dir);
  const model = buildModel(config, join(dir, "config.json"));
  const store = new SafetensorsStore(dir);
  const { dtypes, unused } = loadWeights(model, store, dir);
  const tokenizer = opts.tokenizer === false ? null : Tokenizer.existsIn(dir) ? Tokenizer.fromDir(dir) : null;
  return { model, config, tokenizer, dir, dtypes, unused };
}

const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
];

/** Copies the tokenizer and generation files a model folder has (any of TOKENIZER_FILES) into `dir`. */
export function copyTokenizerFiles(from: string | undefined, dir: string): void {
  if (from) for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(dir, f));
}

/** The HF-named tensors of the model (adapters and tied duplicates excluded), in their original dtypes. */
export function stateDict(model: CausalLM, dtypes?: Map<string, DType>): TensorOut[] {
  const out: TensorOut[] = [];
  for (const [name, p] of model.namedParameters() as [string, Tensor][]) {
    if (name.includes("lora_")) continue;
    const dt = dtypes?.get(name) ?? "F32";
    out.push({ name, dtype: dt === "F16" || dt === "BF16" ? dt : "F32", shape: p.shape, data: p.data });
  }
  return out;
}

/** Writes config.json, the safetensors checkpoint and (copied from `from`) the tokenizer files into `dir`. */
export function saveModel(
  dir: string,
  m: { model: CausalLM; config: HfConfig; dtypes?: Map<string, DType>; dir?: string },
  opts: { maxShardBytes?: number; extraConfig?: Record<string, unknown> } = {},
): void {
  mkdirSync(dir, { recursive: true });
  saveCheckpoint(dir, stateDict(m.model, m.dtypes), { maxShardBytes: opts.maxShardBytes });
  copyTokenizerFiles(m.dir, dir);
  writeFileAtomic(join(dir, "config.json"), [
    `${JSON.stringify({ ...m.config, ...(opts.extraConfig ?? {}) }, null, 2)}\n`,
  ]);
}
