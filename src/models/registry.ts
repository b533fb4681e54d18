// model_type → builder. A family file holds only its HF config mapping, weight names and block forward.
import type { Linear } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { type GemmaConfig, GemmaForCausalLM } from "./gemma.js";
import { GptNeoxForCausalLM } from "./gpt-neox.js";
import { Gpt2LMHeadModel } from "./gpt2.js";
import type { ForwardCache } from "./kvcache.js";
import { type LlamaConfig, LlamaForCausalLM } from "./llama.js";
import { OptForCausalLM } from "./opt.js";
import { PhiForCausalLM } from "./phi.js";

export type HfConfig = Record<string, unknown> & { model_type?: string };

export interface ForwardOpts {
  /** Per-block gradient checkpointing (recompute each block in backward). */
  checkpoint?: boolean;
  /** Inference with a KV cache (no gradients): ids are the positions after the cached ones (`cache.offsets`), and
   * the cache holds them too afterwards. A `KVCache` (batch 1, generation) or a `RowsKV` (a batch, a cached prefix of
   * its own per row: zero-shot contexts shared by their choices). */
  cache?: ForwardCache;
}

/** What every family exposes to the stages (eval, prune, retrain, export). */
export interface CausalLM extends Module {
  readonly config: HfConfig;
  /** Logits (B·T, V) for ids (B·T). */
  forward(ids: Int32Array, B: number, T: number, opts?: ForwardOpts): Tensor;
  /** Final hidden states (B·T, C) before the LM head. */
  hidden(ids: Int32Array, B: number, T: number, opts?: ForwardOpts): Tensor;
  /** LM head: hidden (n, C) → logits (n, V). */
  head(h: Tensor): Tensor;
  /** Maximum context (max_position_embeddings or n_positions). */
  readonly maxContext: number;
  /**
   * longrope (Phi-3): a forward whose last position is past this one rotates every position with the long factors, so
   * keys cached by shorter forwards no longer match a forward of the whole (transformers' Phi-3 generate recomputes
   * its cache there); undefined for every other RoPE.
   */
  readonly ropeSwitch?: number;
  readonly vocabSize: number;
  /** Names of HF tensors that are tied to another parameter and therefore not saved. */
  readonly tiedNames: string[];
  /** Number of decoder blocks. */
  readonly numBlocks: number;
  /** Input of block 0 (embeddings, positions, projections): (B·T, C). */
  embed(ids: Int32Array, B: number, T: number): Tensor;
  /** One decoder block: (B·T, C) → (B·T, C). */
  runBlock(i: number, x: Tensor, B: number, T: number): Tensor;
  /** The prunable linears of block i with their full HF names (prefix of `.weight`). */
  blockLinears(i: number): [string, Linear][];
  /** The LM head as its own Linear; a tied head is untied (a copy of the embedding, tie_word_embeddings=false). */
  untieHead(): Linear;
}

export class ConfigError extends Error {}

type Builder = (cfg: HfConfig) => CausalLM;

const BUILDERS: Record<string, Builder> = {
  llama: (c) => new LlamaForCausalLM(c as unknown as LlamaConfig),
  mistral: (c) => new LlamaForCausalLM(c as unknown as LlamaConfig),
  qwen2: (c) => new LlamaForCausalLM(c as unknown as LlamaConfig),
  qwen3: (c) => new LlamaForCausalLM(c as unknown as LlamaConfig),
  phi3: (c) => new LlamaForCausalLM(c as unknown as LlamaConfig),
  gemma: (c) => new GemmaForCausalLM(c as unknown as GemmaConfig),
  gemma3_text: (c) => new GemmaForCausalLM(c as unknown as GemmaConfig),
  opt: (c) => new OptForCausalLM(c),
  gpt_neox: (c) => new GptNeoxForCausalLM(c),
  gpt2: (c) => new Gpt2LMHeadModel(c),
  phi: (c) => new PhiForCausalLM(c),
};

export function supportedModelTypes(): string[] {
  return Object.keys(BUILDERS);
}

export function registerFamily(modelType: string, b: Builder): void {
  BUILDERS[modelType] = b;
}

export function buildModel(cfg: HfConfig, where = "config.json"): CausalLM {
  const t = cfg.model_type;
  if (typeof t !== "string") throw new ConfigError(`${where}: missing model_type`);
  const b = BUILDERS[t];
  if (!b)
    throw new ConfigError(`${where}: unsupported model_type '${t}' (supported: ${supportedModelTypes().join(", ")})`);
  try {
    return b(cfg);
  } catch (e) {
    // (messages about config keys may already name the file)
    throw new ConfigError(`${where}: ${(e as Error).message.replace(/^config\.json: /, "")}`);
  }
}
