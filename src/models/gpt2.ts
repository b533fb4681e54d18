// GPT-2 (HF modeling_gpt2.py): Conv1D weights stored (in, out), learned positions, pre-LN blocks, gelu_new MLP,
// fused c_attn = [q | k | v], LM head tied to wte.
import * as F from "../nn/functional.js";
import { Embedding, LayerNorm, Linear } from "../nn/layers.js";
import { Module, ModuleList } from "../nn/module.js";
import type { ActKind } from "../tensor/ref/kernels.js";
import type { Tensor } from "../tensor/tensor.js";
import {
  actKind,
  blockCols,
  cacheOffsets,
  DecoderLM,
  headDims,
  positionIds,
  requirePositiveInts,
  runBlocks,
} from "./common.js";
import type { BlockKV } from "./kvcache.js";
import type { CausalLM, ForwardOpts, HfConfig } from "./registry.js";

interface Gpt2Config extends HfConfig {
  vocab_size: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  n_positions: number;
  n_inner?: number | null;
  layer_norm_epsilon?: number;
  activation_function?: string;
  scale_attn_weights?: boolean;
  /** Scores further divided by layer index + 1 (as transformers does when set). */
  scale_attn_by_inverse_layer_idx?: boolean;
}

class Gpt2Attention extends Module {
  readonly c_attn: Linear;
  readonly c_proj: Linear;
  private readonly cols: Int32Array[];
  constructor(
    C: number,
    readonly H: number,
    private readonly scaled: boolean,
    private readonly layerScale: number,
  ) {
    super();
    this.c_attn = this.registerModule("c_attn", new Linear(C, 3 * C, { bias: true, inOut: true }));
    this.c_proj = this.registerModule("c_proj", new Linear(C, C, { bias: true, inOut: true }));
    this.cols = [0, 1, 2].map((p) => blockCols(C, p));
  }
  forward(x: Tensor, B: number, T: number, kv?: BlockKV): Tensor {
    const qkv = this.c_attn.forward(x);
    const [q, k, v] = this.cols.map((c) => F.gatherCols(qkv, c));
    const { H } = this;
    const D = q.shape[q.shape.length - 1] / H;
    const scale = (this.scaled ? 1 / Math.sqrt(D) : 1) * this.layerScale;
    return this.c_proj.forward(kv ? kv.attend(q, k, v, H, H, D, scale) : F.attention(q, k, v, B, T, H, H, D, scale));
  }
}

class Gpt2MLP extends Module {
  readonly c_fc: Linear;
  readonly c_proj: Linear;
  constructor(
    C: number,
    I: number,
    private readonly act: ActKind,
  ) {
    super();
    this.c_fc = this.registerModule("c_fc", new Linear(C, I, { bias: true, inOut: true }));
    this.c_proj = this.registerModule("c_proj", new Linear(I, C, { bias: true, inOut: true }));
  }
  forward(x: Tensor): Tensor {
    return this.c_proj.forward(F.act(this.c_fc.forward(x), this.act));
  }
}

class Gpt2Block extends Module {
  readonly ln_1: LayerNorm;
  readonly attn: Gpt2Attention;
  readonly ln_2: LayerNorm;
  readonly mlp: Gpt2MLP;
  constructor(cfg: Gpt2Config, layer: number) {
    super();
    const C = cfg.n_embd;
    const eps = cfg.layer_norm_epsilon ?? 1e-5;
    this.ln_1 = this.registerModule("ln_1", new LayerNorm(C, eps));
    this.attn = this.registerModule(
      "attn",
      new Gpt2Attention(
        C,
        cfg.n_head,
        cfg.scale_attn_weights ?? true,
        cfg.scale_attn_by_inverse_layer_idx ? 1 / (layer + 1) : 1,
      ),
    );
    this.ln_2 = this.registerModule("ln_2", new LayerNorm(C, eps));
    this.mlp = this.registerModule(
      "mlp",
      new Gpt2MLP(C, cfg.n_inner ?? 4 * C, actKind(cfg.activation_function ?? "gelu_new", "activation_function")),
    );
  }
  forward(x: Tensor, B: number, T: number, kv?: BlockKV): Tensor {
    const h = F.add(x, this.attn.forward(this.ln_1.forward(x), B, T, kv));
    return F.add(h, this.mlp.forward(this.ln_2.forward(h)));
  }
  linears(): [string, Linear][] {
    return [
      ["attn.c_attn", this.attn.c_attn],
      ["attn.c_proj", this.attn.c_proj],
      ["mlp.c_fc", this.mlp.c_fc],
      ["mlp.c_proj", this.mlp.c_proj],
    ];
  }
}

class Gpt2Model extends Module {
  readonly wte: Embedding;
  readonly wpe: Embedding;
  readonly h: ModuleList<Gpt2Block>;
  readonly ln_f: LayerNorm;
  constructor(cfg: Gpt2Config) {
    super();
    this.wte = this.registerModule("wte", new Embedding(cfg.vocab_size, cfg.n_embd));
    this.wpe = this.registerModule("wpe", new Embedding(cfg.n_positions, cfg.n_embd));
    const blocks: Gpt2Block[] = [];
    for (let i = 0; i < cfg.n_layer; i++) blocks.push(new Gpt2Block(cfg, i));
    this.h = this.registerModule("h", new ModuleList(blocks));
    this.ln_f = this.registerModule("ln_f", new LayerNorm(cfg.n_embd, cfg.layer_norm_epsilon ?? 1e-5));
  }
}

export class Gpt2LMHeadModel extends DecoderLM<Gpt2Block> implements CausalLM {
  readonly transformer: Gpt2Model;
  readonly maxContext: number;
  readonly vocabSize: number;
  protected readonly blockPrefix = "transformer.h";
  readonly config: Gpt2Config;

  constructor(config: HfConfig) {
    super();
    const cfg = config as Gpt2Config;
    requirePositiveInts(cfg, ["vocab_size", "n_embd", "n_layer", "n_head", "n_positions"]);
    headDims(cfg.n_embd, cfg.n_head, "n_embd");
    this.config = cfg;
    this.maxContext = cfg.n_positions;
    this.vocabSize = cfg.vocab_size;
    this.transformer = this.registerModule("transformer", new Gpt2Model(cfg));
    this.initHead(cfg.tie_word_embeddings !== false);
  }

  get blocks(): Gpt2Block[] {
    return this.transformer.h.items;
  }

  /** `offsets`: the first position of every row, or of each row. */
  embed(ids: Int32Array, B: number, T: number, offsets: number | Int32Array = 0): Tensor {
    const pos = positionIds(B, T, offsets, this.maxContext, "GPT-2", "n_positions");
    const t = this.transformer;
    return F.add(t.wte.forward(ids), t.wpe.forward(pos));
  }

  runBlock(i: number, x: Tensor, B: number, T: number): Tensor {
    return this.blocks[i].forward(x, B, T);
  }

  hidden(ids: Int32Array, B: number, T: number, opts: ForwardOpts = {}): Tensor {
    const x = this.embed(ids, B, T, cacheOffsets(opts, B));
    return this.transformer.ln_f.forward(runBlocks(this.blocks, x, (b, h, kv) => b.forward(h, B, T, kv), opts, B, T));
  }

  protected embeddingTable(): Tensor {
    return this.transformer.wte.weight;
  }
}
