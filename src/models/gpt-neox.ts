// GPT-NeoX / Pythia (HF modeling_gpt_neox.py): fused QKV laid out per head (H, 3, D), partial rotary (rotary_pct,
// rotate-half on the first R dims), parallel residual x + attn(ln1(x)) + mlp(ln2(x)), GELU, untied embed_out.
import * as F from "../nn/functional.js";
import { Embedding, LayerNorm, Linear } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import type { Tensor } from "../tensor/tensor.js";
import { actKind, cacheOffsets, DecoderLM, headDims, perHeadCols, requirePositiveInts, runBlocks } from "./common.js";
import type { BlockKV } from "./kvcache.js";
import { RopeCache, type RopeScaling, ropeSettings, rotaryDims } from "./llama.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

interface NeoxConfig extends HfConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  max_position_embeddings: number;
  rotary_pct?: number;
  rotary_emb_base?: number;
  rope_theta?: number;
  rope_scaling?: RopeScaling | null;
  rope_parameters?: RopeScaling | null;
  layer_norm_eps?: number;
  use_parallel_residual?: boolean;
  hidden_act?: string;
  tie_word_embeddings?: boolean;
  attention_bias?: boolean;
}

class NeoxAttention extends Module {
  readonly query_key_value: Linear;
  readonly dense: Linear;
  readonly cols: Int32Array[];
  constructor(
    C: number,
    readonly H: number,
    readonly D: number,
    bias: boolean,
  ) {
    super();
    this.query_key_value = this.registerModule("query_key_value", new Linear(C, 3 * C, { bias }));
    this.dense = this.registerModule("dense", new Linear(C, C, { bias }));
    this.cols = [0, 1, 2].map((p) => perHeadCols(H, 3, D, p));
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const { H, D } = this;
    const qkv = this.query_key_value.forward(x); // (B, T, H·3·D)
    const [q, k, v] = this.cols.map((c) => F.gatherCols(qkv, c));
    const [qr, kr] = [F.rope(q, B, T, H, D, rope), F.rope(k, B, T, H, D, rope)];
    const scale = 1 / Math.sqrt(D);
    return this.dense.forward(kv ? kv.attend(qr, kr, v, H, H, D, scale) : F.attention(qr, kr, v, B, T, H, H, D, scale));
  }
}

class NeoxLayer extends Module {
  readonly input_layernorm: LayerNorm;
  readonly post_attention_layernorm: LayerNorm;
  readonly attention: NeoxAttention;
  readonly mlp: NeoxMLP;
  constructor(private readonly cfg: NeoxConfig) {
    super();
    const C = cfg.hidden_size;
    const eps = cfg.layer_norm_eps ?? 1e-5;
    const bias = cfg.attention_bias ?? true;
    this.input_layernorm = this.registerModule("input_layernorm", new LayerNorm(C, eps));
    this.post_attention_layernorm = this.registerModule("post_attention_layernorm", new LayerNorm(C, eps));
    this.attention = this.registerModule(
      "attention",
      new NeoxAttention(C, cfg.num_attention_heads, C / cfg.num_attention_heads, bias),
    );
    this.mlp = this.registerModule("mlp", new NeoxMLP(C, cfg.intermediate_size, actKind(cfg.hidden_act ?? "gelu")));
  }
  forward(x: Tensor, B: number, T: number, rope: F.RopeTables, kv?: BlockKV): Tensor {
    const a = this.attention.forward(this.input_layernorm.forward(x), B, T, rope, kv);
    if (this.cfg.use_parallel_residual ?? true) {
      const m = this.mlp.forward(this.post_attention_layernorm.forward(x));
      return F.add(F.add(x, a), m);
    }
    const h = F.add(x, a);
    return F.add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
  linears(): [string, Linear][] {
    return [
      ["attention.query_key_value", this.attention.query_key_value],
      ["attention.dense", this.attention.dense],
      ["mlp.dense_h_to_4h", this.mlp.dense_h_to_4h],
      ["mlp.dense_4h_to_h", this.mlp.dense_4h_to_h],
    ];
  }
}

class NeoxMLP extends Module {
  readonly dense_h_to_4h: Linear;
  readonly dense_4h_to_h: Linear;
  constructor(
    C: number,
    I: number,
    private readonly act: ActKind,
  ) {
    super();
    this.dense_h_to_4h = this.registerModule("dense_h_to_4h", new Linear(C, I, { bias: true }));
    this.dense_4h_to_h = this.registerModule("dense_4h_to_h", new Linear(I, C, { bias: true }));
  }
  forward(x: Tensor): Tensor {
    return this.dense_4h_to_h.forward(F.act(this.dense_h_to_4h.forward(x), this.act));
  }
}

class NeoxModel extends Module {
  readonly embed_in: Embedding;
  readonly layers: ModuleList<NeoxLayer>;
  readonly final_layer_norm: LayerNorm;
  constructor(cfg: NeoxConfig) {
    super();
    this.embed_in = this.registerModule("embed_in", new Embedding(cfg.vocab_size, cfg.hidden_size));
    const layers: NeoxLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(new NeoxLayer(cfg));
    this.layers = this.registerModule("layers", new ModuleList(layers));
    this.final_layer_norm = this.registerModule(
      "final_layer_norm",
      new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps ?? 1e-5),
    );
  }
}

export class GptNeoxForCausalLM extends DecoderLM<NeoxLayer> implements CausalLM {
  readonly gpt_neox: NeoxModel;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "gpt_neox.layers";
  readonly config: NeoxConfig;
  private readonly rotDim: number;
  private readonly ropeCfg: ReturnType<typeof ropeSettings>;
  private readonly ropeCache: RopeCache;

  constructor(config: HfConfig) {
    super();
    const cfg = config as NeoxConfig;
    requirePositiveInts(cfg, [
      "vocab_size",
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "intermediate_size",
      "max_position_embeddings",
    ]);
    const D = headDims(cfg.hidden_size, cfg.num_attention_heads);
    // transformers v5 writes rotary_pct / rotary_emb_base as rope_parameters.partial_rotary_factor / rope_theta.
    this.ropeCfg = ropeSettings(cfg, { theta: cfg.rotary_emb_base, partial: cfg.rotary_pct ?? 0.25 });
    this.rotDim = rotaryDims(D, this.ropeCfg, 0.25, "rotary_pct");
    this.ropeCache = new RopeCache(this.rotDim, this.ropeCfg.theta, this.ropeCfg.scaling, cfg.max_position_embeddings);
    this.config = cfg;
    this.maxContext = cfg.max_position_embeddings;
    this.vocabSize = cfg.vocab_size;
    this.gpt_neox = this.registerModule("gpt_neox", new NeoxModel(cfg));
    this.initHead(!!cfg.tie_word_embeddings, () => new Linear(cfg.hidden_size, cfg.vocab_size), "embed_out");
  }

  get blocks(): NeoxLayer[] {
    return this.gpt_neox.layers.items;
  }

  get ropeSwitch(): number | undefined {
    return this.ropeCache.switchAt;
  }

  /** RoPE tables for positions pos0 .. pos0 + T - 1. */
  private rope(T: number, pos0 = 0): F.RopeTables {
    return this.ropeCache.get(T, pos0);
  }

  embed(ids: Int32Array): Tensor {
    return this.gpt_neox.embed_in.forward(ids);
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    return this.blocks[i].forward(x, B, T, this.rope(T));
  }

  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const rope = this.ropeCache.rows(B, T, cacheOffsets(opts, B));
    const h = this.gpt_neox.embed_in.forward(ids);
    const x = runBlocks(this.blocks, h, (b, h, kv) => b.forward(h, B, T, rope, kv), opts, B, T);
    return this.gpt_neox.final_layer_norm.forward(x);
  }

  protected embeddingTable(): Tensor {
    return this.gpt_neox.embed_in.weight;
  }
}
