// Phi-1 / Phi-1.5 / Phi-2 (HF modeling_phi.py): one LayerNorm per block feeding attention and MLP in parallel
// (x + attn(ln(x)) + mlp(ln(x))), q/k/v/dense and fc1/fc2 with biases, partial rotary (rotate-half on the first
// partial_rotary_factor of each head, default 0.5), optional LayerNorms of each head of q and k (qk_layernorm),
// final_layernorm, an untied lm_head with a bias.
import * as F from "../nn/functional.js";
import { Embedding, LayerNorm, Linear } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import type { Tensor } from "../tensor/tensor.js";
import { actKind, cacheOffsets, DecoderLM, gqaHeadDim, requirePositiveInts, runBlocks } from "./common.js";
import type { BlockKV } from "./kvcache.js";
import { RopeCache, type RopeScaling, ropeSettings, rotaryDims } from "./llama.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

interface PhiConfig extends HfConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number | null;
  max_position_embeddings?: number;
  partial_rotary_factor?: number;
  rope_theta?: number;
  rope_scaling?: RopeScaling | null;
  rope_parameters?: RopeScaling | null;
  layer_norm_eps?: number;
  hidden_act?: string;
  qk_layernorm?: boolean;
  tie_word_embeddings?: boolean;
  pad_token_id?: number | null;
}

class PhiAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly dense: Linear;
  readonly q_layernorm: LayerNorm | null = null;
  readonly k_layernorm: LayerNorm | null = null;
  constructor(
    C: number,
    readonly H: number,
    readonly KV: number,
    readonly D: number,
    qkNormEps?: number,
  ) {
    super();
    this.q_proj = this.registerModule("q_proj", new Linear(C, H * D, { bias: true }));
    this.k_proj = this.registerModule("k_proj", new Linear(C, KV * D, { bias: true }));
    this.v_proj = this.registerModule("v_proj", new Linear(C, KV * D, { bias: true }));
    this.dense = this.registerModule("dense", new Linear(H * D, C, { bias: true }));
    if (qkNormEps !== undefined) {
      this.q_layernorm = this.registerModule("q_layernorm", new LayerNorm(D, qkNormEps));
      this.k_layernorm = this.registerModule("k_layernorm", new LayerNorm(D, qkNormEps));
    }
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const { H, KV, D } = this;
    let q = this.q_proj.forward(x);
    let k = this.k_proj.forward(x);
    const v = this.v_proj.forward(x);
    if (this.q_layernorm && this.k_layernorm) {
      // over each head: rows of D
      const perHead = (t: Tensor, n: LayerNorm) => F.reshape(n.forward(F.reshape(t, [t.size / D, D])), t.shape);
      q = perHead(q, this.q_layernorm);
      k = perHead(k, this.k_layernorm);
    }
    q = F.rope(q, B, T, H, D, rope);
    k = F.rope(k, B, T, KV, D, rope);
    const scale = 1 / Math.sqrt(D);
    const a = kv ? kv.attend(q, k, v, H, KV, D, scale) : F.attention(q, k, v, B, T, H, KV, D, scale);
    return this.dense.forward(a);
  }
}

class PhiMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(
    C: number,
    I: number,
    private readonly act: ActKind,
  ) {
    super();
    this.fc1 = this.registerModule("fc1", new Linear(C, I, { bias: true }));
    this.fc2 = this.registerModule("fc2", new Linear(I, C, { bias: true }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(F.act(this.fc1.forward(x), this.act));
  }
}

export class PhiDecoderLayer extends Module {
  readonly input_layernorm: LayerNorm;
  readonly self_attn: PhiAttention;
  readonly mlp: PhiMLP;
  constructor(cfg: PhiConfig, D: number) {
    super();
    const C = cfg.hidden_size;
    const H = cfg.num_attention_heads;
    const eps = cfg.layer_norm_eps ?? 1e-5;
    this.input_layernorm = this.registerModule("input_layernorm", new LayerNorm(C, eps));
    this.self_attn = this.registerModule(
      "self_attn",
      new PhiAttention(C, H, cfg.num_key_value_heads ?? H, D, cfg.qk_layernorm ? eps : undefined),
    );
    this.mlp = this.registerModule("mlp", new PhiMLP(C, cfg.intermediate_size, actKind(cfg.hidden_act ?? "gelu_new")));
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const h = this.input_layernorm.forward(x);
    return F.add(F.add(this.self_attn.forward(h, B, T, rope, kv), this.mlp.forward(h)), x);
  }
  linears(): [string, Linear][] {
    return [
      ["self_attn.q_proj", this.self_attn.q_proj],
      ["self_attn.k_proj", this.self_attn.k_proj],
      ["self_attn.v_proj", this.self_attn.v_proj],
      ["self_attn.dense", this.self_attn.dense],
      ["mlp.fc1", this.mlp.fc1],
      ["mlp.fc2", this.mlp.fc2],
    ];
  }
}

class PhiModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<PhiDecoderLayer>;
  readonly final_layernorm: LayerNorm;
  constructor(cfg: PhiConfig, D: number) {
    super();
    this.embed_tokens = this.registerModule(
      "embed_tokens",
      new Embedding(cfg.vocab_size, cfg.hidden_size, undefined, cfg.pad_token_id),
    );
    const layers: PhiDecoderLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(new PhiDecoderLayer(cfg, D));
    this.layers = this.registerModule("layers", new ModuleList(layers));
    this.final_layernorm = this.registerModule(
      "final_layernorm",
      new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps ?? 1e-5),
    );
  }
}

export class PhiForCausalLM extends DecoderLM<PhiDecoderLayer> implements CausalLM {
  readonly model: PhiModel;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "model.layers";
  readonly config: PhiConfig;
  private readonly ropeCache: RopeCache;

  constructor(config: HfConfig) {
    super();
    const cfg = config as PhiConfig;
    requirePositiveInts(cfg, [
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
    ]);
    // transformers ties only lm_head.weight and keeps lm_head.bias: no released Phi does that, and perp does not.
    if (cfg.tie_word_embeddings)
      throw new RangeError("tie_word_embeddings is not supported for Phi (its lm_head has a bias)");
    const D = gqaHeadDim({ ...cfg, num_key_value_heads: cfg.num_key_value_heads ?? undefined });
    const rs = ropeSettings(cfg, { partial: cfg.partial_rotary_factor ?? 0.5 });
    this.config = cfg;
    this.maxContext = cfg.max_position_embeddings ?? 2048;
    this.vocabSize = cfg.vocab_size;
    this.ropeCache = new RopeCache(rotaryDims(D, rs), rs.theta, rs.scaling, this.maxContext);
    this.model = this.registerModule("model", new PhiModel(cfg, D));
    this.initHead(false, () => new Linear(cfg.hidden_size, cfg.vocab_size, { bias: true }));
  }

  get blocks(): PhiDecoderLayer[] {
    return this.model.layers.items;
  }

  get ropeSwitch(): number | undefined {
    return this.ropeCache.switchAt;
  }

  embed(ids: Int32Array, B: number, T: number): Tensor {
    if (ids.length !== B * T) throw new RangeError(`forward: ${ids.length} ids for B=${B}, T=${T}`);
    return this.model.embed_tokens.forward(ids);
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    return this.blocks[i].forward(x, B, T, this.ropeCache.get(T));
  }

  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const rope = this.ropeCache.rows(B, T, cacheOffsets(opts, B));
    const x = runBlocks(this.blocks, this.embed(ids, B, T), (b, h, kv) => b.forward(h, B, T, rope, kv), opts, B, T);
    return this.model.final_layernorm.forward(x);
  }

  protected embeddingTable(): Tensor {
    return this.model.embed_tokens.weight;
  }
}
