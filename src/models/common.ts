// Shared pieces of the family files: config checks, the checkpointed block loop, DecoderLM (the (un)tied LM head, the
// blocks' linears under their HF names).

import * as F from "../nn/functional.js";
import { Linear } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { checkpoint } from "../nn/tape.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import type { Tensor } from "../tensor/tensor.js";
import type { BlockKV } from "./kvcache.js";
import type { ForwardOpts, HfConfig } from "./registry.js";

export function requirePositiveInts(cfg: Record<string, unknown>, keys: string[]): void {
  for (const k of keys) {
    const v = cfg[k];
    if (!(Number.isInteger(v) && (v as number) > 0))
      throw new RangeError(`${k} must be a positive integer (got ${JSON.stringify(v)})`);
  }
}

/** transformers' ACT2FN name → the engine's activation (gelu_new, gelu_fast and gelu_pytorch_tanh: the tanh GELU). */
export function actKind(name: string, key = "hidden_act"): ActKind {
  if (name === "gelu_new" || name === "gelu_pytorch_tanh" || name === "gelu_fast") return "gelu_tanh";
  if (name === "gelu") return "gelu";
  if (name === "relu") return "relu";
  if (name === "silu" || name === "swish") return "silu";
  throw new RangeError(`unsupported ${key} '${name}'`);
}

export function headDims(hidden: number, heads: number, what = "hidden_size"): number {
  const D = hidden / heads;
  if (!Number.isInteger(D)) throw new RangeError(`${what} ${hidden} is not divisible by num_attention_heads ${heads}`);
  return D;
}

/** A GQA config's head size (head_dim, else hidden_size / heads), checked: an even integer, KV heads dividing heads. */
export function gqaHeadDim(cfg: {
  hidden_size: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
}): number {
  const H = cfg.num_attention_heads;
  const KV = cfg.num_key_value_heads ?? H;
  const D = cfg.head_dim ?? cfg.hidden_size / H;
  if (!Number.isInteger(D) || D % 2 !== 0 || H % KV !== 0)
    throw new RangeError(
      `hidden_size ${cfg.hidden_size}, num_attention_heads ${H} and num_key_value_heads ${KV} are inconsistent (head_dim ${D})`,
    );
  return D;
}

/**
 * Runs the blocks in order over B x T positions, each under gradient checkpointing when asked. With a KV cache each
 * block gets its view of it (`kv`), and the T positions join the cache once every block has seen them.
 */
export function runBlocks<B extends Module>(
  blocks: B[],
  x: Tensor,
  f: (b: B, h: Tensor, kv?: BlockKV) => Tensor,
  opts: ForwardOpts,
  batch: number,
  T: number,
): Tensor {
  const cache = opts.cache;
  blocks.forEach((b, i) => {
    const kv = cache?.block(i, batch, T);
    x = opts.checkpoint ? checkpoint((h) => f(b, h, kv), x, b.parameters()) : f(b, x, kv);
  });
  cache?.commit(T);
  return x;
}

/** Each row's first position: the cache's offsets (one per row: checked against the batch), else 0. */
export function cacheOffsets(opts: ForwardOpts, B: number): number | Int32Array {
  const o = opts.cache?.offsets ?? 0;
  if (typeof o !== "number" && o.length !== B)
    throw new RangeError(`forward: ${o.length} cached-prefix lengths for a batch of ${B}`);
  return o;
}

/**
 * Learned-position ids (B·T) of rows whose first token sits at `offsets` (one for every row, or one per row), plus
 * `shift` (OPT's 2); every row must end within the model's `max` positions (config key `key`, named in the error).
 */
export function positionIds(
  B: number,
  T: number,
  offsets: number | Int32Array,
  max: number,
  what: string,
  key: string,
  shift = 0,
): Int32Array {
  const pos = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const o = typeof offsets === "number" ? offsets : offsets[b];
    if (o + T > max) throw new RangeError(`${what}: sequence length ${o + T} exceeds ${key} ${max}`);
    for (let t = 0; t < T; t++) pos[b * T + t] = o + t + shift;
  }
  return pos;
}

/** Column indices that pick part `p` of `parts` from a fused per-head layout (H, parts, D) (GPT-NeoX QKV). */
export function perHeadCols(H: number, parts: number, D: number, p: number): Int32Array {
  const out = new Int32Array(H * D);
  for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) out[h * D + d] = h * parts * D + p * D + d;
  return out;
}

/** Column indices of block `p` in a (parts, C) concatenation (GPT-2 c_attn: [q | k | v]). */
export function blockCols(C: number, p: number): Int32Array {
  return Int32Array.from({ length: C }, (_, i) => p * C + i);
}

/** A trainable LM head initialised as a copy of the tied embedding table (vocab, hidden): untieHead()'s layer. */
function headFromEmbedding(e: Tensor): Linear {
  return new Linear(e.shape[1], e.shape[0], { weight: e.data.slice() });
}

/**
 * What every family's causal LM shares around its decoder stack: logits = head(hidden(ids)), the head being the
 * model's own Linear (untied) or the input embedding table itself (tied: h · embeddingᵀ); untieHead() gives a tied
 * model a head of its own, a trainable copy of the table. A family supplies its blocks and their HF name prefix, its
 * embedding table, and calls initHead() in its constructor.
 */
export abstract class DecoderLM<Block extends { linears(): [string, Linear][] }> extends Module {
  abstract readonly config: HfConfig;
  /** Names of HF tensors tied to another parameter (the head's weight while tied), not saved. */
  tiedNames: string[] = [];
  /** The model's own head, registered as headName; null while tied to the embedding table. */
  private ownHead: Linear | null = null;
  private headName = "lm_head";
  abstract get blocks(): Block[];
  /** HF name prefix of the blocks: block i's linears are `${blockPrefix}.${i}.<name>`. */
  protected abstract readonly blockPrefix: string;
  /** The input embedding table (vocab, hidden), which a tied head shares. */
  protected abstract embeddingTable(): Tensor;
  abstract hidden(ids: Int32Array, B: number, T: number, opts?: ForwardOpts): Tensor;

  /**
   * For the constructor: the head tied to the embedding table, or its own (`untied()`, by default a copy of the
   * table) registered as `name`, its HF tensors' prefix.
   */
  protected initHead(tied: boolean, untied?: () => Linear, name = "lm_head"): void {
    this.headName = name;
    this.tiedNames = tied ? [`${name}.weight`] : [];
    this.ownHead = tied
      ? null
      : this.registerModule(name, untied ? untied() : headFromEmbedding(this.embeddingTable()));
  }

  get numBlocks(): number {
    return this.blocks.length;
  }

  /** The prunable linears of block i with their full HF names (prefix of `.weight`). */
  blockLinears(i: number): [string, Linear][] {
    return this.blocks[i].linears().map(([n, l]) => [`${this.blockPrefix}.${i}.${n}`, l]);
  }

  /** The head as its own Linear: a tied one becomes a trainable copy of the table (tie_word_embeddings false). */
  untieHead(): Linear {
    if (!this.ownHead) {
      this.config.tie_word_embeddings = false;
      this.tiedNames = [];
      this.ownHead = this.registerModule(this.headName, headFromEmbedding(this.embeddingTable()));
    }
    return this.ownHead;
  }

  /** Logits (n, V) for hidden states (n, C). */
  head(h: Tensor): Tensor {
    return this.ownHead ? this.ownHead.forward(h) : F.linear(h, this.embeddingTable());
  }

  /** Logits (B·T, V) for ids (B·T). */
  forward(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    return this.head(this.hidden(ids, B, T, opts));
  }
}
