// LLaMA / Mistral / Qwen2 / Qwen3 / Phi-3 decoder (HF modeling_llama.py, modeling_mistral.py, modeling_qwen2.py,
// modeling_qwen3.py, modeling_phi3.py): RMSNorm, RoPE (rotate-half), GQA attention (with Mistral's, Qwen's and Phi-3's
// sliding windows), SwiGLU MLP. Qwen2 has biases on q, k and v only; Qwen3 RMS-normalises each head of q and k
// (q_norm, k_norm) before RoPE; Phi-3 fuses q, k, v into one qkv_proj and gate, up into one gate_up_proj (each one
// prunable linear, as in transformers) and may rotate only part of each head (partial_rotary_factor).
// Parameter names are the HF state-dict keys (model.layers.N.self_attn.q_proj.weight, ...).
import * as F from "../nn/functional.js";
import { Embedding, Linear, RMSNorm } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import { newF32 } from "../tensor/arena.js";
import { Rng } from "../tensor/rng.js";
import type { Tensor } from "../tensor/tensor.js";
import { cacheOffsets, DecoderLM, gqaHeadDim, requirePositiveInts, runBlocks } from "./common.js";
import type { BlockKV } from "./kvcache.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

export interface LlamaConfig {
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
  max_position_embeddings?: number;
  tie_word_embeddings?: boolean;
  attention_bias?: boolean;
  mlp_bias?: boolean;
  rope_scaling?: RopeScaling | null;
  /** transformers v5 writes rope_theta and the scaling here instead (see ropeSettings). */
  rope_parameters?: RopeScaling | null;
  partial_rotary_factor?: number;
  pad_token_id?: number | null;
  /** Mistral: each query attends to the last `sliding_window` keys up to itself (null: all). */
  sliding_window?: number | null;
  /** Qwen2 / Qwen3: the window applies only when this is true, to the layers `layer_types` (or, without it, layer
   * index >= max_window_layers) marks "sliding_attention". */
  use_sliding_window?: boolean;
  max_window_layers?: number;
  layer_types?: string[];
}

const QWEN = new Set(["qwen2", "qwen3"]);

/**
 * The attention window of block `layer` (0: none): Mistral's and Phi-3's sliding_window on every block; Qwen2 /
 * Qwen3's, when use_sliding_window, on the blocks transformers makes "sliding_attention" (its layer_types, else those
 * from max_window_layers on, default 28). transformers applies a window for no other model_type.
 */
export function slidingWindow(cfg: LlamaConfig, layer = 0): number {
  const w = cfg.sliding_window;
  if (!(typeof w === "number" && w > 0)) return 0;
  if (cfg.model_type === "mistral" || cfg.model_type === "phi3") return w;
  if (!QWEN.has(cfg.model_type ?? "") || cfg.use_sliding_window !== true) return 0;
  const types = cfg.layer_types;
  if (Array.isArray(types)) return types[layer] === "sliding_attention" ? w : 0;
  return layer >= (cfg.max_window_layers ?? 28) ? w : 0;
}

/** Whether any block of the model has a window shorter than its context (one that can bind). */
export function windowBinds(cfg: LlamaConfig): boolean {
  const ctx = cfg.max_position_embeddings;
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const w = slidingWindow(cfg, l);
    if (w > 0 && !(typeof ctx === "number" && w >= ctx)) return true;
  }
  return false;
}

export interface RopeScaling {
  rope_type?: string;
  type?: string;
  factor?: number | null;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
  /** yarn: */
  attention_factor?: number | null;
  beta_fast?: number | null;
  beta_slow?: number | null;
  mscale?: number | null;
  mscale_all_dim?: number | null;
  truncate?: boolean;
  /** longrope (Phi-3): per-frequency divisors below / above original_max_position_embeddings. */
  short_factor?: number[];
  long_factor?: number[];
  /** transformers v5 `rope_parameters` only: */
  rope_theta?: number;
  partial_rotary_factor?: number;
}

/**
 * A config's RoPE settings as transformers reads them. Version 5 writes `rope_parameters` (rope_type, rope_theta,
 * the scaling factors and, for partial rotary, partial_rotary_factor); version 4 wrote `rope_scaling` and flat keys.
 * As in transformers, `rope_scaling` wins over `rope_parameters` when both are there, values inside the dict win over
 * the flat ones, and the family's legacy keys and defaults come last. Per-layer-type dicts (nested) are rejected.
 * For llama3, yarn and longrope the pretraining context is filled in as transformers' standardize_rope_params does (a
 * top-level `original_max_position_embeddings` first, then the dict's, then max_position_embeddings), and a yarn or
 * longrope factor left out is their ratio; the config itself is never modified.
 */
export function ropeSettings(
  cfg: {
    rope_theta?: number;
    rope_scaling?: RopeScaling | null;
    rope_parameters?: RopeScaling | null;
    max_position_embeddings?: number;
    original_max_position_embeddings?: number;
  },
  legacy: { theta?: number; partial?: number } = {},
): { theta: number; scaling: RopeScaling | null; partial: number | undefined } {
  const dict = cfg.rope_scaling ?? cfg.rope_parameters ?? null;
  if (dict !== null && (typeof dict !== "object" || Array.isArray(dict)))
    throw new RangeError("config.json: rope_parameters / rope_scaling must be an object");
  if (dict && Object.values(dict).some((v) => v !== null && typeof v === "object" && !Array.isArray(v)))
    throw new RangeError(
      `config.json: rope_parameters given per layer type (${Object.keys(dict).join(", ")}) are not supported`,
    );
  const theta = dict?.rope_theta ?? legacy.theta ?? cfg.rope_theta ?? 10000;
  if (!(typeof theta === "number" && theta > 0))
    throw new RangeError(`config.json: rope_theta must be > 0, got ${theta}`);
  let scaling = dict;
  const kind = dict?.rope_type ?? dict?.type;
  if (dict && (kind === "llama3" || kind === "yarn" || kind === "longrope")) {
    const orig =
      cfg.original_max_position_embeddings ?? dict.original_max_position_embeddings ?? cfg.max_position_embeddings;
    if (!(typeof orig === "number" && orig > 0))
      throw new RangeError(
        `config.json: ${kind} RoPE needs original_max_position_embeddings (or max_position_embeddings)`,
      );
    scaling = { ...dict, original_max_position_embeddings: orig };
    if ((kind === "yarn" || kind === "longrope") && (dict.factor === undefined || dict.factor === null)) {
      if (!cfg.max_position_embeddings)
        throw new RangeError(`config.json: ${kind} RoPE without a factor needs max_position_embeddings`);
      scaling.factor = cfg.max_position_embeddings / orig;
    }
  }
  return { theta, scaling, partial: dict?.partial_rotary_factor ?? legacy.partial };
}

/**
 * Rotated dims per head for a model's RoPE settings: int(head_dim · partial_rotary_factor) (all of them without one),
 * rounded down to even; the scaling type and its factors are checked here too (an error names what is wrong).
 */
export function rotaryDims(
  headDim: number,
  s: ReturnType<typeof ropeSettings>,
  partialDefault = 1,
  key = "partial_rotary_factor",
): number {
  const partial = s.partial ?? partialDefault;
  if (!(partial > 0 && partial <= 1)) throw new RangeError(`${key} must be in (0, 1], got ${partial}`);
  let rotDim = Math.floor(headDim * partial);
  if (rotDim % 2) rotDim -= 1;
  for (const long of [false, true]) invFreq(rotDim, s.theta, s.scaling, long);
  return rotDim;
}

// transformers' yarn helpers (modeling_rope_utils._compute_yarn_parameters), in double as Python computes them.
const yarnMscale = (scale: number, m = 1) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
const yarnCorrectionDim = (rot: number, dim: number, base: number, orig: number) =>
  (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base));

/**
 * HF inv_freq with `rope_scaling` (linear: ÷factor; llama3: per-wavelength interpolation; yarn: NTK-by-parts blend of
 * interpolated and extrapolated frequencies; dynamic: the plain frequencies, which transformers' dynamic NTK keeps up
 * to max_position_embeddings, the longest sequence perp runs; longrope: each frequency divided by its short_factor, or
 * with `long` (a forward that reaches past original_max_position_embeddings) its long_factor); others are rejected.
 * llama3, yarn and longrope expect the settings ropeSettings resolved.
 */
export function invFreq(rotDim: number, theta: number, scaling?: RopeScaling | null, long = false): number[] {
  const pos = Array.from({ length: rotDim / 2 }, (_, i) => Math.fround(theta ** Math.fround((2 * i) / rotDim)));
  const inv = pos.map((p) => Math.fround(1 / p));
  const kind = scaling?.rope_type ?? scaling?.type;
  if (!scaling || !kind || kind === "default" || kind === "dynamic") return inv;
  if (kind === "longrope") {
    const which = long ? "long_factor" : "short_factor";
    const ext = scaling[which];
    if (!Array.isArray(ext) || ext.length !== rotDim / 2 || !ext.every((x) => typeof x === "number" && x > 0))
      throw new RangeError(
        `config.json: longrope ${which} must be ${rotDim / 2} positive numbers (one per rotary frequency), got ${Array.isArray(ext) ? `${ext.length} values` : JSON.stringify(ext)}`,
      );
    return pos.map((p, i) => Math.fround(1 / Math.fround(Math.fround(ext[i]) * p)));
  }
  const factor = scaling.factor ?? 1;
  if (kind === "linear") return inv.map((f) => Math.fround(f / factor));
  if (kind === "llama3") {
    const lo = scaling.low_freq_factor ?? 1;
    const hi = scaling.high_freq_factor ?? 4;
    const old = scaling.original_max_position_embeddings ?? 8192;
    const loWave = old / lo;
    const hiWave = old / hi;
    return inv.map((f) => {
      const wave = (2 * Math.PI) / f;
      if (wave < hiWave) return f;
      if (wave > loWave) return Math.fround(f / factor);
      const smooth = (old / wave - lo) / (hi - lo);
      return Math.fround((1 - smooth) * (f / factor) + smooth * f);
    });
  }
  if (kind === "yarn") {
    const orig = scaling.original_max_position_embeddings ?? 0;
    let low = yarnCorrectionDim(scaling.beta_fast || 32, rotDim, theta, orig);
    let high = yarnCorrectionDim(scaling.beta_slow || 1, rotDim, theta, orig);
    if (scaling.truncate ?? true) {
      low = Math.floor(low);
      high = Math.ceil(high);
    }
    low = Math.max(low, 0);
    high = Math.min(high, rotDim - 1);
    if (low === high) high += 0.001;
    const f32 = Math.fround;
    return pos.map((p, i) => {
      const ramp = Math.min(1, Math.max(0, f32(f32(i - f32(low)) / f32(high - low))));
      const extrap = f32(1 - ramp); // the share of the extrapolated (unscaled) frequency
      const interp = f32(1 / f32(factor * p));
      return f32(f32(interp * f32(1 - extrap)) + f32(inv[i] * extrap));
    });
  }
  throw new RangeError(`unsupported rope_scaling type '${kind}' (supported: linear, llama3, yarn, dynamic, longrope)`);
}

/** transformers' attention_scaling for a RoPE type: yarn's and longrope's (cos and sin times it), else 1. */
export function ropeAttentionFactor(scaling?: RopeScaling | null): number {
  const kind = scaling?.rope_type ?? scaling?.type;
  if (!scaling || (kind !== "yarn" && kind !== "longrope")) return 1;
  if (scaling.attention_factor !== undefined && scaling.attention_factor !== null) return scaling.attention_factor;
  const factor = scaling.factor ?? 1;
  if (kind === "longrope") {
    const orig = scaling.original_max_position_embeddings ?? 0;
    return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig));
  }
  if (scaling.mscale && scaling.mscale_all_dim)
    return yarnMscale(factor, scaling.mscale) / yarnMscale(factor, scaling.mscale_all_dim);
  return yarnMscale(factor);
}

/**
 * HF rotary tables: inv_freq in float32, angles pos·inv_freq in float32, cos/sin of those (T, D/2), times yarn's or
 * longrope's attention factor (in float32, as transformers scales cos and sin). `long`: longrope's long factors.
 */
export function ropeTables(
  T: number,
  rotDim: number,
  theta: number,
  interleaved = false,
  scaling?: RopeScaling | null,
  long = false,
): F.RopeTables {
  const half = rotDim / 2;
  const cos = newF32(T * half);
  const sin = newF32(T * half);
  const freqs = invFreq(rotDim, theta, scaling, long);
  const af = Math.fround(ropeAttentionFactor(scaling));
  for (let i = 0; i < half; i++) {
    const inv = freqs[i];
    for (let t = 0; t < T; t++) {
      const a = Math.fround(t * inv);
      cos[t * half + i] = af === 1 ? Math.cos(a) : Math.fround(Math.cos(a)) * af;
      sin[t * half + i] = af === 1 ? Math.sin(a) : Math.fround(Math.sin(a)) * af;
    }
  }
  return { cos, sin, R: rotDim, interleaved };
}

/**
 * Rotary tables of one model, computed once for as many positions as asked so far (doubling, up to the context, so
 * that generation token by token does not recompute them at every step); views for positions pos0 .. pos0 + T - 1.
 * longrope keeps two: a forward whose last position reaches past original_max_position_embeddings uses the long
 * factors for all its positions, as transformers picks them from the largest position id of the call.
 */
export class RopeCache {
  private readonly tabs: [F.RopeTables | null, F.RopeTables | null] = [null, null];
  private readonly ns = [0, 0];
  private readonly longFrom: number;
  constructor(
    private readonly rotDim: number,
    private readonly theta: number,
    private readonly scaling: RopeScaling | null,
    private readonly maxPositions: number,
  ) {
    const kind = scaling?.rope_type ?? scaling?.type;
    this.longFrom = kind === "longrope" ? (scaling?.original_max_position_embeddings ?? Infinity) : Infinity;
  }
  /** longrope's switch to the long factors (see CausalLM.ropeSwitch); undefined for other types. */
  get switchAt(): number | undefined {
    return Number.isFinite(this.longFrom) ? this.longFrom : undefined;
  }
  get(T: number, pos0 = 0): F.RopeTables {
    const need = pos0 + T;
    const w = need > this.longFrom ? 1 : 0;
    if (!this.tabs[w] || this.ns[w] < need) {
      this.ns[w] = Math.max(need, Math.min(this.maxPositions, 2 * this.ns[w]));
      this.tabs[w] = ropeTables(this.ns[w], this.rotDim, this.theta, false, this.scaling, w === 1);
    }
    const half = this.rotDim / 2;
    const t = this.tabs[w] as F.RopeTables;
    return { ...t, cos: t.cos.subarray(pos0 * half, need * half), sin: t.sin.subarray(pos0 * half, need * half) };
  }

  /** Tables for B rows of T positions starting at `offsets` (one for every row, or one per row: per-token tables). */
  rows(B: number, T: number, offsets: number | Int32Array): F.RopeTables {
    if (typeof offsets === "number") return this.get(T, offsets);
    if (offsets.every((o) => o === offsets[0])) return this.get(T, offsets[0] ?? 0);
    const half = this.rotDim / 2;
    const all = this.get(Math.max(...offsets) + T);
    const cos = newF32(B * T * half);
    const sin = newF32(B * T * half);
    for (let b = 0; b < B; b++) {
      const from = offsets[b] * half;
      cos.set(all.cos.subarray(from, from + T * half), b * T * half);
      sin.set(all.sin.subarray(from, from + T * half), b * T * half);
    }
    return { ...all, cos, sin, perToken: true };
  }
}

export interface AttentionOpts {
  /** Biases on q, k, v and on o. */
  qkvBias: boolean;
  oBias: boolean;
  /** Qwen3, Gemma 3: RMSNorm of each head of q and k (over head_dim) with this eps, before RoPE. */
  qkNormEps?: number;
  /** The norm class of q_norm / k_norm (Gemma's scales by 1 + weight). */
  qkNorm?: new (
    dim: number,
    eps: number,
  ) => RMSNorm;
  window: number;
  /** Phi-3: one qkv_proj (q, k, v rows in that order) instead of three. */
  fused?: boolean;
  /** Scores scale (Gemma 3: query_pre_attn_scalar^-1/2); default head_dim^-1/2. */
  scale?: number;
}

const range = (from: number, n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);

export class LlamaAttention extends Module {
  readonly q_proj: Linear | null = null;
  readonly k_proj: Linear | null = null;
  readonly v_proj: Linear | null = null;
  readonly qkv_proj: Linear | null = null;
  private readonly qkvCols: Int32Array[] = [];
  readonly o_proj: Linear;
  readonly q_norm: RMSNorm | null = null;
  readonly k_norm: RMSNorm | null = null;
  readonly window: number;
  private readonly scale: number;
  constructor(
    readonly H: number,
    readonly KV: number,
    readonly D: number,
    C: number,
    o: AttentionOpts,
  ) {
    super();
    this.window = o.window;
    this.scale = o.scale ?? 1 / Math.sqrt(D);
    if (o.fused) {
      this.qkv_proj = this.registerModule("qkv_proj", new Linear(C, (H + 2 * KV) * D, { bias: o.qkvBias }));
      this.qkvCols = [range(0, H * D), range(H * D, KV * D), range((H + KV) * D, KV * D)];
    } else {
      this.q_proj = this.registerModule("q_proj", new Linear(C, H * D, { bias: o.qkvBias }));
      this.k_proj = this.registerModule("k_proj", new Linear(C, KV * D, { bias: o.qkvBias }));
      this.v_proj = this.registerModule("v_proj", new Linear(C, KV * D, { bias: o.qkvBias }));
    }
    this.o_proj = this.registerModule("o_proj", new Linear(H * D, C, { bias: o.oBias }));
    if (o.qkNormEps !== undefined) {
      const Norm = o.qkNorm ?? RMSNorm;
      this.q_norm = this.registerModule("q_norm", new Norm(D, o.qkNormEps));
      this.k_norm = this.registerModule("k_norm", new Norm(D, o.qkNormEps));
    }
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const { H, KV, D } = this;
    // x: (B, T, C) → q: (B, T, H, D), k/v: (B, T, KV, D); q_norm / k_norm normalise rows of D (one per head).
    let q: Tensor;
    let k: Tensor;
    let v: Tensor;
    if (this.qkv_proj) {
      const qkv = this.qkv_proj.forward(x);
      [q, k, v] = this.qkvCols.map((c) => F.gatherCols(qkv, c));
    } else {
      [q, k, v] = [this.q_proj, this.k_proj, this.v_proj].map((l) => (l as Linear).forward(x));
    }
    if (this.q_norm && this.k_norm) {
      q = this.q_norm.forward(q);
      k = this.k_norm.forward(k);
    }
    q = F.rope(q, B, T, H, D, rope);
    k = F.rope(k, B, T, KV, D, rope);
    const scale = this.scale;
    const a = kv
      ? kv.attend(q, k, v, H, KV, D, scale, this.window)
      : F.attention(q, k, v, B, T, H, KV, D, scale, this.window);
    return this.o_proj.forward(a);
  }
}

class LlamaMLP extends Module {
  readonly gate_proj: Linear | null = null;
  readonly up_proj: Linear | null = null;
  /** Phi-3: gate (first I rows) and up (the next I) in one linear. */
  readonly gate_up_proj: Linear | null = null;
  private readonly halves: Int32Array[] = [];
  readonly down_proj: Linear;
  constructor(C: number, I: number, bias: boolean, fused = false) {
    super();
    if (fused) {
      this.gate_up_proj = this.registerModule("gate_up_proj", new Linear(C, 2 * I, { bias }));
      this.halves = [range(0, I), range(I, I)];
    } else {
      this.gate_proj = this.registerModule("gate_proj", new Linear(C, I, { bias }));
      this.up_proj = this.registerModule("up_proj", new Linear(C, I, { bias }));
    }
    this.down_proj = this.registerModule("down_proj", new Linear(I, C, { bias }));
  }
  forward(x: Tensor): Tensor {
    if (this.gate_up_proj) {
      const gu = this.gate_up_proj.forward(x);
      const [g, u] = this.halves.map((c) => F.gatherCols(gu, c));
      return this.down_proj.forward(F.swiglu(g, u));
    }
    return this.down_proj.forward(F.swiglu((this.gate_proj as Linear).forward(x), (this.up_proj as Linear).forward(x)));
  }
}

/**
 * Which linears have biases, as transformers builds each family: LLaMA from attention_bias (q, k, v, o) and mlp_bias;
 * Mistral and Phi-3 none (their classes ignore both flags); Qwen2 q, k and v always, o and the MLP never; Qwen3
 * attention_bias (q, k, v, o), the MLP never.
 */
function familyBiases(cfg: LlamaConfig): { qkvBias: boolean; oBias: boolean; mlpBias: boolean } {
  switch (cfg.model_type) {
    case "mistral":
    case "phi3":
      return { qkvBias: false, oBias: false, mlpBias: false };
    case "qwen2":
      return { qkvBias: true, oBias: false, mlpBias: false };
    case "qwen3":
      return { qkvBias: !!cfg.attention_bias, oBias: !!cfg.attention_bias, mlpBias: false };
    default:
      return { qkvBias: !!cfg.attention_bias, oBias: !!cfg.attention_bias, mlpBias: !!cfg.mlp_bias };
  }
}

export class LlamaDecoderLayer extends Module {
  readonly input_layernorm: RMSNorm;
  readonly self_attn: LlamaAttention;
  readonly post_attention_layernorm: RMSNorm;
  readonly mlp: LlamaMLP;
  constructor(cfg: Required<Pick<LlamaConfig, "hidden_size" | "intermediate_size">> & LlamaConfig, layer = 0) {
    super();
    const C = cfg.hidden_size;
    const H = cfg.num_attention_heads;
    const KV = cfg.num_key_value_heads ?? H;
    const D = cfg.head_dim ?? C / H;
    const eps = cfg.rms_norm_eps ?? 1e-6;
    const { qkvBias, oBias, mlpBias } = familyBiases(cfg);
    const fused = cfg.model_type === "phi3";
    this.input_layernorm = this.registerModule("input_layernorm", new RMSNorm(C, eps));
    this.self_attn = this.registerModule(
      "self_attn",
      new LlamaAttention(H, KV, D, C, {
        qkvBias,
        oBias,
        window: slidingWindow(cfg, layer),
        fused,
        // Qwen3: an RMSNorm of each head of q and k
        ...(cfg.model_type === "qwen3" ? { qkNormEps: eps } : {}),
      }),
    );
    this.post_attention_layernorm = this.registerModule("post_attention_layernorm", new RMSNorm(C, eps));
    this.mlp = this.registerModule("mlp", new LlamaMLP(C, cfg.intermediate_size, mlpBias, fused));
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const h = F.add(x, this.self_attn.forward(this.input_layernorm.forward(x), B, T, rope, kv));
    return F.add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
  /** The prunable linears, in HF order: 7 (Phi-3: 4, q/k/v and gate/up fused). */
  linears(): [string, Linear][] {
    return blockLinearsOf(this.self_attn, this.mlp);
  }
}

/** The prunable linears of a LLaMA-style block (attention q/k/v or qkv, o; MLP gate/up or gate_up, down), HF order. */
export function blockLinearsOf(
  a: { [k in "q_proj" | "k_proj" | "v_proj" | "qkv_proj" | "o_proj"]?: Linear | null },
  m: { [k in "gate_proj" | "up_proj" | "gate_up_proj" | "down_proj"]?: Linear | null },
): [string, Linear][] {
  const out: [string, Linear | null | undefined][] = [
    ["self_attn.q_proj", a.q_proj],
    ["self_attn.k_proj", a.k_proj],
    ["self_attn.v_proj", a.v_proj],
    ["self_attn.qkv_proj", a.qkv_proj],
    ["self_attn.o_proj", a.o_proj],
    ["mlp.gate_proj", m.gate_proj],
    ["mlp.up_proj", m.up_proj],
    ["mlp.gate_up_proj", m.gate_up_proj],
    ["mlp.down_proj", m.down_proj],
  ];
  return out.filter((e): e is [string, Linear] => !!e[1]);
}

class LlamaModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<LlamaDecoderLayer>;
  readonly norm: RMSNorm;
  constructor(cfg: LlamaConfig) {
    super();
    // transformers' LLaMA / Mistral embed with padding_idx = pad_token_id (when the config sets one).
    this.embed_tokens = this.registerModule(
      "embed_tokens",
      new Embedding(cfg.vocab_size, cfg.hidden_size, undefined, cfg.pad_token_id),
    );
    const layers: LlamaDecoderLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(new LlamaDecoderLayer(cfg, i));
    this.layers = this.registerModule("layers", new ModuleList(layers));
    this.norm = this.registerModule("norm", new RMSNorm(cfg.hidden_size, cfg.rms_norm_eps ?? 1e-6));
  }
}

export class LlamaForCausalLM extends DecoderLM<LlamaDecoderLayer> implements CausalLM {
  readonly model: LlamaModel;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "model.layers";
  private readonly ropeCache: RopeCache;
  private readonly ropeCfg: ReturnType<typeof ropeSettings>;
  readonly headDim: number;

  readonly config: LlamaConfig & HfConfig;
  constructor(config: LlamaConfig) {
    super();
    this.config = config as LlamaConfig & HfConfig;
    requirePositiveInts(config as unknown as Record<string, unknown>, [
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
      "vocab_size",
    ]);
    this.headDim = gqaHeadDim(config);
    this.maxContext = config.max_position_embeddings ?? 2048;
    this.vocabSize = config.vocab_size;
    this.ropeCfg = ropeSettings(config, { partial: config.partial_rotary_factor });
    // Partial rotary (the first int(head_dim · factor) dims of each head) exists in transformers' Phi-3 only.
    const partial = this.ropeCfg.partial ?? 1;
    if (partial !== 1 && config.model_type !== "phi3")
      throw new RangeError(`partial_rotary_factor ${partial} is not supported for model_type ${config.model_type}`);
    const rotDim = rotaryDims(this.headDim, this.ropeCfg);
    this.ropeCache = new RopeCache(rotDim, this.ropeCfg.theta, this.ropeCfg.scaling, this.maxContext);
    this.model = this.registerModule("model", new LlamaModel(config));
    this.initHead(!!config.tie_word_embeddings, () => new Linear(config.hidden_size, config.vocab_size));
  }

  get ropeSwitch(): number | undefined {
    return this.ropeCache.switchAt;
  }

  get blocks(): LlamaDecoderLayer[] {
    return this.model.layers.items;
  }

  /** Random init (N(0, std) for matrices, ones for norms), seeded; for tests and benchmarks. */
  initRandom(seed = 0, std = 0.02): this {
    const rng = new Rng(seed);
    for (const [, p] of this.namedParameters()) {
      if (p.shape.length === 2) rng.fillNormal(p.data, std);
    }
    return this;
  }

  /** RoPE tables for positions pos0 .. pos0 + T - 1. */
  rope(T: number, pos0 = 0): F.RopeTables {
    return this.ropeCache.get(T, pos0);
  }

  embed(ids: Int32Array, B: number, T: number): Tensor {
    if (ids.length !== B * T) throw new RangeError(`forward: ${ids.length} ids for B=${B}, T=${T}`);
    return this.model.embed_tokens.forward(ids);
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    return this.model.layers.items[i].forward(x, B, T, this.rope(T));
  }

  /** Final hidden states (B·T, C) for token ids (B·T). */
  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const rope = this.ropeCache.rows(B, T, cacheOffsets(opts, B));
    const x = runBlocks(this.blocks, this.embed(ids, B, T), (b, h, kv) => b.forward(h, B, T, rope, kv), opts, B, T);
    return this.model.norm.forward(x);
  }

  protected embeddingTable(): Tensor {
    return this.model.embed_tokens.weight;
  }
}
