// OPT (HF modeling_opt.py): learned positions with offset 2, pre- or post-LayerNorm (do_layer_norm_before), ReLU MLP,
// optional project_in/project_out when word_embed_proj_dim != hidden_size (OPT-350m), LM head tied to the embeddings.
import * as F from "../nn/functional.js";
import { Embedding, LayerNorm, Linear } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import type { Tensor } from "../tensor/tensor.js";
import { actKind, cacheOffsets, DecoderLM, headDims, positionIds, requirePositiveInts, runBlocks } from "./common.js";
import type { BlockKV } from "./kvcache.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

interface OptConfig extends HfConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  ffn_dim: number;
  max_position_embeddings: number;
  do_layer_norm_before?: boolean;
  word_embed_proj_dim?: number;
  enable_bias?: boolean;
  activation_function?: string;
  _remove_final_layer_norm?: boolean;
  layer_norm_elementwise_affine?: boolean;
  pad_token_id?: number | null;
}

const OFFSET = 2;

class OptAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(
    C: number,
    readonly H: number,
    bias: boolean,
  ) {
    super();
    this.q_proj = this.registerModule("q_proj", new Linear(C, C, { bias }));
    this.k_proj = this.registerModule("k_proj", new Linear(C, C, { bias }));
    this.v_proj = this.registerModule("v_proj", new Linear(C, C, { bias }));
    this.out_proj = this.registerModule("out_proj", new Linear(C, C, { bias }));
  }
  forward(x: Tensor, B: number, T: number, kv?: BlockKV): Tensor {
    const { H } = this;
    const D = x.shape[x.shape.length - 1] / H;
    const [q, k, v] = [this.q_proj.forward(x), this.k_proj.forward(x), this.v_proj.forward(x)];
    const scale = 1 / Math.sqrt(D);
    return this.out_proj.forward(kv ? kv.attend(q, k, v, H, H, D, scale) : F.attention(q, k, v, B, T, H, H, D, scale));
  }
}

class OptDecoderLayer extends Module {
  readonly self_attn: OptAttention;
  readonly self_attn_layer_norm: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly final_layer_norm: LayerNorm;
  constructor(
    private readonly cfg: OptConfig,
    private readonly act: ActKind,
  ) {
    super();
    const C = cfg.hidden_size;
    const bias = cfg.enable_bias ?? true;
    this.self_attn = this.registerModule("self_attn", new OptAttention(C, cfg.num_attention_heads, bias));
    this.self_attn_layer_norm = this.registerModule(
      "self_attn_layer_norm",
      new LayerNorm(C, 1e-5, cfg.layer_norm_elementwise_affine ?? true),
    );
    this.fc1 = this.registerModule("fc1", new Linear(C, cfg.ffn_dim, { bias }));
    this.fc2 = this.registerModule("fc2", new Linear(cfg.ffn_dim, C, { bias }));
    this.final_layer_norm = this.registerModule(
      "final_layer_norm",
      new LayerNorm(C, 1e-5, cfg.layer_norm_elementwise_affine ?? true),
    );
  }
  forward(x: Tensor, B: number, T: number, kv?: BlockKV): Tensor {
    const pre = this.cfg.do_layer_norm_before ?? true;
    let h = pre ? this.self_attn_layer_norm.forward(x) : x;
    h = F.add(x, this.self_attn.forward(h, B, T, kv));
    if (!pre) h = this.self_attn_layer_norm.forward(h);
    const m = pre ? this.final_layer_norm.forward(h) : h;
    let out = F.add(h, this.fc2.forward(F.act(this.fc1.forward(m), this.act)));
    if (!pre) out = this.final_layer_norm.forward(out);
    return out;
  }
  linears(): [string, Linear][] {
    const a = this.self_attn;
    return [
      ["self_attn.q_proj", a.q_proj],
      ["self_attn.k_proj", a.k_proj],
      ["self_attn.v_proj", a.v_proj],
      ["self_attn.out_proj", a.out_proj],
      ["fc1", this.fc1],
      ["fc2", this.fc2],
    ];
  }
}

class OptDecoder extends Module {
  readonly embed_tokens: Embedding;
  readonly embed_positions: Embedding;
  readonly final_layer_norm: LayerNorm | null;
  readonly project_in: Linear | null;
  readonly project_out: Linear | null;
  readonly layers: ModuleList<OptDecoderLayer>;
  constructor(cfg: OptConfig) {
    super();
    const C = cfg.hidden_size;
    const P = cfg.word_embed_proj_dim ?? C;
    const act = actKind(cfg.activation_function ?? "relu", "activation_function");
    // transformers' OPT embeds with padding_idx = pad_token_id (1 by default): that row learns nothing from lookups.
    this.embed_tokens = this.registerModule(
      "embed_tokens",
      new Embedding(cfg.vocab_size, P, undefined, cfg.pad_token_id === undefined ? 1 : cfg.pad_token_id),
    );
    this.embed_positions = this.registerModule(
      "embed_positions",
      new Embedding(cfg.max_position_embeddings + OFFSET, C),
    );
    const pre = cfg.do_layer_norm_before ?? true;
    this.final_layer_norm =
      pre && !cfg._remove_final_layer_norm
        ? this.registerModule("final_layer_norm", new LayerNorm(C, 1e-5, cfg.layer_norm_elementwise_affine ?? true))
        : null;
    this.project_out = P !== C ? this.registerModule("project_out", new Linear(C, P)) : null;
    this.project_in = P !== C ? this.registerModule("project_in", new Linear(P, C)) : null;
    const layers: OptDecoderLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(new OptDecoderLayer(cfg, act));
    this.layers = this.registerModule("layers", new ModuleList(layers));
  }
}

class OptModel extends Module {
  readonly decoder: OptDecoder;
  constructor(cfg: OptConfig) {
    super();
    this.decoder = this.registerModule("decoder", new OptDecoder(cfg));
  }
}

export class OptForCausalLM extends DecoderLM<OptDecoderLayer> implements CausalLM {
  readonly model: OptModel;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "model.decoder.layers";
  readonly config: OptConfig;

  constructor(config: HfConfig) {
    super();
    const cfg = config as OptConfig;
    requirePositiveInts(cfg, [
      "vocab_size",
      "hidden_size",
      "num_hidden_layers",
      "num_attention_heads",
      "ffn_dim",
      "max_position_embeddings",
    ]);
    headDims(cfg.hidden_size, cfg.num_attention_heads);
    this.config = cfg;
    this.maxContext = cfg.max_position_embeddings;
    this.vocabSize = cfg.vocab_size;
    this.model = this.registerModule("model", new OptModel(cfg));
    this.initHead(cfg.tie_word_embeddings !== false);
  }

  get blocks(): OptDecoderLayer[] {
    return this.model.decoder.layers.items;
  }

  /** `offsets`: the first position of every row, or of each row. */
  embed(ids: Int32Array, B: number, T: number, offsets: number | Int32Array = 0): Tensor {
    const d = this.model.decoder;
    const pos = positionIds(B, T, offsets, this.maxContext, "OPT", "max_position_embeddings", OFFSET);
    let x = d.embed_tokens.forward(ids);
    if (d.project_in) x = d.project_in.forward(x);
    return F.add(x, d.embed_positions.forward(pos));
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    return this.blocks[i].forward(x, B, T);
  }

  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const d = this.model.decoder;
    let x = this.embed(ids, B, T, cacheOffsets(opts, B));
    x = runBlocks(this.blocks, x, (b, h, kv) => b.forward(h, B, T, kv), opts, B, T);
    if (d.final_layer_norm) x = d.final_layer_norm.forward(x);
    if (d.project_out) x = d.project_out.forward(x);
    return x;
  }

  protected embeddingTable(): Tensor {
    return this.model.decoder.embed_tokens.weight;
  }
}
