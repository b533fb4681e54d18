// Gemma and Gemma 3 (text) decoders (HF modeling_gemma.py, modeling_gemma3.py): RMSNorm that scales by (1 + weight),
// embeddings times sqrt(hidden_size), GeGLU MLP (tanh GELU of the gate times up), GQA attention with RoPE. Gemma 3
// adds an RMSNorm after attention and around the MLP ("sandwich" norms), q_norm / k_norm over each head, attention
// scaled by query_pre_attn_scalar^-1/2, and two kinds of blocks: sliding-window ones with their own (local) RoPE base
// and full-attention ones. Parameter names are the HF state-dict keys.
import * as F from "../nn/functional.js";
import { Embedding, Linear, RMSNorm } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import { Rng } from "../tensor/rng.js";
import { Tensor } from "../tensor/tensor.js";
import { cacheOffsets, DecoderLM, gqaHeadDim, requirePositiveInts, runBlocks } from "./common.js";
import type { BlockKV } from "./kvcache.js";
import { blockLinearsOf, LlamaAttention, RopeCache, type RopeScaling, ropeSettings, rotaryDims } from "./llama.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

export interface GemmaConfig {
  model_type?: string;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  vocab_size: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  /** Gemma 3, transformers 4 configs: the RoPE base of the sliding-window blocks. */
  rope_local_base_freq?: number;
  rope_scaling?: RopeScaling | null;
  /** transformers 5: one dict, or (Gemma 3) one per block kind: full_attention, sliding_attention. */
  rope_parameters?: RopeScaling | Record<string, RopeScaling> | null;
  max_position_embeddings?: number;
  tie_word_embeddings?: boolean;
  attention_bias?: boolean;
  pad_token_id?: number | null;
  hidden_act?: string;
  hidden_activation?: string;
  /** Gemma 3: */
  query_pre_attn_scalar?: number;
  sliding_window?: number | null;
  sliding_window_pattern?: number;
  layer_types?: string[];
  attn_logit_softcapping?: number | null;
  final_logit_softcapping?: number | null;
  use_bidirectional_attention?: boolean;
}

/** Gemma's RMSNorm: x / rms(x) · (1 + weight), the weight stored as the offset from 1 (HF GemmaRMSNorm). */
export class GemmaRMSNorm extends RMSNorm {
  private readonly one: Tensor;
  constructor(dim: number, eps: number) {
    super(dim, eps, new Float32Array(dim));
    this.one = new Tensor(new Float32Array(dim).fill(1), [dim]);
  }
  override forward(x: Tensor): Tensor {
    return F.rmsnorm(x, F.add(this.weight, this.one), this.eps);
  }
}

const gemma3 = (cfg: GemmaConfig) => cfg.model_type === "gemma3_text";

/** Block i is a sliding-window one (Gemma 3: layer_types, else every block but each sliding_window_pattern-th). */
function isSliding(cfg: GemmaConfig, i: number): boolean {
  if (!gemma3(cfg)) return false;
  if (Array.isArray(cfg.layer_types)) return cfg.layer_types[i] === "sliding_attention";
  return (i + 1) % (cfg.sliding_window_pattern ?? 6) !== 0;
}

class GemmaMLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;
  constructor(C: number, I: number) {
    super();
    this.gate_proj = this.registerModule("gate_proj", new Linear(C, I, { bias: false }));
    this.up_proj = this.registerModule("up_proj", new Linear(C, I, { bias: false }));
    this.down_proj = this.registerModule("down_proj", new Linear(I, C, { bias: false }));
  }
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(F.mul(F.act(this.gate_proj.forward(x), "gelu_tanh"), this.up_proj.forward(x)));
  }
}

export class GemmaDecoderLayer extends Module {
  readonly input_layernorm: GemmaRMSNorm;
  readonly self_attn: LlamaAttention;
  readonly post_attention_layernorm: GemmaRMSNorm;
  /** Gemma 3: around the MLP (post_attention_layernorm then normalises the attention output). */
  readonly pre_feedforward_layernorm: GemmaRMSNorm | null = null;
  readonly post_feedforward_layernorm: GemmaRMSNorm | null = null;
  readonly mlp: GemmaMLP;
  readonly sliding: boolean;
  constructor(cfg: GemmaConfig, layer: number, D: number) {
    super();
    const C = cfg.hidden_size;
    const H = cfg.num_attention_heads;
    const KV = cfg.num_key_value_heads ?? H;
    const eps = cfg.rms_norm_eps ?? 1e-6;
    const g3 = gemma3(cfg);
    this.sliding = isSliding(cfg, layer);
    const window = this.sliding && typeof cfg.sliding_window === "number" ? cfg.sliding_window : 0;
    const scale = 1 / Math.sqrt(g3 ? (cfg.query_pre_attn_scalar ?? 256) : D);
    this.input_layernorm = this.registerModule("input_layernorm", new GemmaRMSNorm(C, eps));
    this.self_attn = this.registerModule(
      "self_attn",
      new LlamaAttention(H, KV, D, C, {
        qkvBias: !!cfg.attention_bias,
        oBias: !!cfg.attention_bias,
        window,
        scale,
        ...(g3 ? { qkNormEps: eps, qkNorm: GemmaRMSNorm } : {}),
      }),
    );
    this.post_attention_layernorm = this.registerModule("post_attention_layernorm", new GemmaRMSNorm(C, eps));
    if (g3) {
      this.pre_feedforward_layernorm = this.registerModule("pre_feedforward_layernorm", new GemmaRMSNorm(C, eps));
      this.post_feedforward_layernorm = this.registerModule("post_feedforward_layernorm", new GemmaRMSNorm(C, eps));
    }
    this.mlp = this.registerModule("mlp", new GemmaMLP(C, cfg.intermediate_size));
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const a = this.self_attn.forward(this.input_layernorm.forward(x), B, T, rope, kv);
    if (!this.pre_feedforward_layernorm || !this.post_feedforward_layernorm) {
      const h = F.add(x, a);
      return F.add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
    }
    const h = F.add(x, this.post_attention_layernorm.forward(a));
    const m = this.mlp.forward(this.pre_feedforward_layernorm.forward(h));
    return F.add(h, this.post_feedforward_layernorm.forward(m));
  }
  /** The 7 prunable linears, in HF order. */
  linears(): [string, Linear][] {
    return blockLinearsOf(this.self_attn, this.mlp);
  }
}

class GemmaModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<GemmaDecoderLayer>;
  readonly norm: GemmaRMSNorm;
  constructor(cfg: GemmaConfig, D: number) {
    super();
    this.embed_tokens = this.registerModule(
      "embed_tokens",
      new Embedding(cfg.vocab_size, cfg.hidden_size, undefined, cfg.pad_token_id),
    );
    const layers: GemmaDecoderLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(new GemmaDecoderLayer(cfg, i, D));
    this.layers = this.registerModule("layers", new ModuleList(layers));
    this.norm = this.registerModule("norm", new GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps ?? 1e-6));
  }
}

/**
 * The RoPE settings of each block kind. Gemma: one, from the config as LLaMA reads it. Gemma 3: transformers 5 writes
 * a dict per kind under rope_parameters; transformers 4 wrote rope_theta (+ rope_scaling) for the full-attention
 * blocks and rope_local_base_freq for the sliding ones (defaults 1e6 and 1e4, as Gemma3TextConfig).
 */
function ropeKinds(cfg: GemmaConfig): {
  full: ReturnType<typeof ropeSettings>;
  sliding: ReturnType<typeof ropeSettings>;
} {
  const base = { max_position_embeddings: cfg.max_position_embeddings };
  if (!gemma3(cfg)) {
    const s = ropeSettings(cfg as never);
    return { full: s, sliding: s };
  }
  const rp = cfg.rope_parameters as Record<string, unknown> | null | undefined;
  if (rp && typeof rp === "object" && ("full_attention" in rp || "sliding_attention" in rp)) {
    const kind = (k: string, theta: number) =>
      ropeSettings({ ...base, rope_parameters: (rp[k] as RopeScaling | undefined) ?? null }, { theta });
    return { full: kind("full_attention", 1e6), sliding: kind("sliding_attention", 1e4) };
  }
  return {
    full: ropeSettings({
      ...base,
      rope_scaling: cfg.rope_scaling,
      rope_parameters: rp as RopeScaling,
      rope_theta: cfg.rope_theta ?? 1e6,
    }),
    sliding: ropeSettings({ ...base }, { theta: cfg.rope_local_base_freq ?? 1e4 }),
  };
}

export class GemmaForCausalLM extends DecoderLM<GemmaDecoderLayer> implements CausalLM {
  readonly model: GemmaModel;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "model.layers";
  readonly headDim: number;
  private readonly ropes: { full: RopeCache; sliding: RopeCache };
  private readonly embedScale: number;
  readonly config: GemmaConfig & HfConfig;

  constructor(config: GemmaConfig) {
    super();
    this.config = config as GemmaConfig & HfConfig;
    requirePositiveInts(config as unknown as Record<string, unknown>, [
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
      "vocab_size",
    ]);
    this.headDim = gqaHeadDim(config);
    // What transformers' Gemma 3 can do that perp does not: refused, never ignored.
    for (const k of ["attn_logit_softcapping", "final_logit_softcapping"] as const)
      if (config[k] !== undefined && config[k] !== null)
        throw new RangeError(`${k} ${config[k]} is not supported (logit soft-capping)`);
    if (config.use_bidirectional_attention) throw new RangeError("use_bidirectional_attention is not supported");
    const act = config.hidden_activation ?? config.hidden_act ?? "gelu_pytorch_tanh";
    // (transformers maps Gemma's legacy "gelu" to the tanh approximation too)
    if (!["gelu_pytorch_tanh", "gelu", "gelu_new"].includes(act))
      throw new RangeError(`hidden activation '${act}' is not supported for Gemma (gelu_pytorch_tanh)`);
    this.maxContext = config.max_position_embeddings ?? 8192;
    this.vocabSize = config.vocab_size;
    this.embedScale = Math.fround(Math.sqrt(config.hidden_size));
    const kinds = ropeKinds(config);
    const cache = (s: ReturnType<typeof ropeSettings>) => {
      if (s.partial !== undefined && s.partial !== 1)
        throw new RangeError(`partial_rotary_factor ${s.partial} is not supported for Gemma`);
      return new RopeCache(rotaryDims(this.headDim, s), s.theta, s.scaling, this.maxContext);
    };
    const full = cache(kinds.full);
    // (Gemma: one RoPE for every block, so one set of tables)
    this.ropes = { full, sliding: kinds.sliding === kinds.full ? full : cache(kinds.sliding) };
    this.model = this.registerModule("model", new GemmaModel(config, this.headDim));
    this.initHead(config.tie_word_embeddings !== false, () => new Linear(config.hidden_size, config.vocab_size));
  }

  get blocks(): GemmaDecoderLayer[] {
    return this.model.layers.items;
  }

  /** Random init (N(0, std) for matrices; norms stay at their offset 0, i.e. scale 1), seeded. */
  initRandom(seed = 0, std = 0.02): this {
    const rng = new Rng(seed);
    for (const [, p] of this.namedParameters()) if (p.shape.length === 2) rng.fillNormal(p.data, std);
    return this;
  }

  embed(ids: Int32Array, B: number, T: number): Tensor {
    if (ids.length !== B * T) throw new RangeError(`forward: ${ids.length} ids for B=${B}, T=${T}`);
    return F.scale(this.model.embed_tokens.forward(ids), this.embedScale);
  }

  private ropeOf(block: GemmaDecoderLayer): RopeCache {
    return block.sliding ? this.ropes.sliding : this.ropes.full;
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    const b = this.blocks[i];
    return b.forward(x, B, T, this.ropeOf(b).get(T));
  }

  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const off = cacheOffsets(opts, B);
    const full = this.ropes.full.rows(B, T, off);
    const tabs = { full, sliding: this.ropes.sliding === this.ropes.full ? full : this.ropes.sliding.rows(B, T, off) };
    const x = runBlocks(
      this.blocks,
      this.embed(ids, B, T),
      (b, h, kv) => b.forward(h, B, T, b.sliding ? tabs.sliding : tabs.full, kv),
      opts,
      B,
      T,
    );
    return this.model.norm.forward(x);
  }

  protected embeddingTable(): Tensor {
    return this.model.embed_tokens.weight;
  }
}
