// llama2.c import (karpathy/llama2.c checkpoints: the legacy v0 files run.c reads, the v1 float32 and v2 Q8_0 files
// export.py --version 1/2 writes, which run.c / runq.c read; and tokenizer.bin) → an HF LLaMA folder.
// llama2.c applies RoPE to interleaved pairs (2i, 2i+1); HF LLaMA rotates halves (i, i+D/2), so q/k rows are permuted
// per head exactly as transformers' convert_llama_weights_to_hf.py permute() does.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { saveCheckpoint, type TensorOut, writeFileAtomic } from "./safetensors.js";

export interface Llama2cHeader {
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  vocab_size: number;
  seq_len: number;
  shared_classifier: boolean;
  /** 0: legacy (28-byte header, vocab sign = classifier flag), 1: float32, 2: Q8_0 (256-byte "ak42" header). */
  version: 0 | 1 | 2;
  /** Q8_0 group size (version 2). */
  group_size?: number;
}

export class ImportError extends Error {}

const MAGIC = 0x616b3432; // "ak42"

export function readLlama2cHeader(buf: Buffer, file: string): Llama2cHeader {
  if (buf.length < 28) throw new ImportError(`${file}: truncated (${buf.length} bytes; the header alone is 28)`);
  let version: 0 | 1 | 2 = 0;
  let at = 0;
  if (buf.readUInt32LE(0) === MAGIC) {
    if (buf.length < 256) throw new ImportError(`${file}: truncated (${buf.length} bytes; a v1/v2 header is 256)`);
    const v = buf.readInt32LE(4);
    if (v !== 1 && v !== 2)
      throw new ImportError(`${file}: llama2.c export version ${v} is not supported (versions 0, 1 and 2 are)`);
    version = v;
    at = 8;
  }
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vs, seq_len] = [0, 1, 2, 3, 4, 5, 6].map((i) =>
    buf.readInt32LE(at + 4 * i),
  );
  const hdr: Llama2cHeader = {
    dim,
    hidden_dim,
    n_layers,
    n_heads,
    n_kv_heads,
    vocab_size: Math.abs(vs),
    seq_len,
    // v0 flags an untied classifier by a negative vocab size; v1/v2 have a flag byte after the seven ints.
    shared_classifier: version === 0 ? vs > 0 : buf.readUInt8(36) !== 0,
    version,
  };
  if (version === 2) hdr.group_size = buf.readInt32LE(37);
  if (!(dim > 0 && hidden_dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && seq_len > 0 && vs !== 0))
    throw new ImportError(`${file}: implausible header ${JSON.stringify(hdr)}`);
  if (version > 0 && vs < 0) throw new ImportError(`${file}: negative vocab size ${vs} in a version-${version} header`);
  if (dim % n_heads !== 0 || n_heads % n_kv_heads !== 0 || (dim / n_heads) % 2 !== 0)
    throw new ImportError(`${file}: dim ${dim}, heads ${n_heads}, kv heads ${n_kv_heads} are inconsistent`);
  const gs = hdr.group_size;
  if (version === 2 && !(gs !== undefined && gs > 0 && dim % gs === 0))
    throw new ImportError(`${file}: Q8_0 group size ${gs} does not divide dim ${dim}`);
  return hdr;
}

/** The weights of a llama2.c checkpoint, float32, in llama2.c's own layout (q/k rows still interleaved for RoPE). */
interface Llama2cWeights {
  emb: Float32Array;
  rmsAtt: Float32Array;
  rmsFfn: Float32Array;
  rmsFinal: Float32Array;
  /** Per layer. */
  wq: Float32Array[];
  wk: Float32Array[];
  wv: Float32Array[];
  wo: Float32Array[];
  w1: Float32Array[];
  w2: Float32Array[];
  w3: Float32Array[];
  wcls: Float32Array | null;
}

/** float32 values at byte offset `at` (copied: the offsets of a v2 file are not 4-byte aligned). */
function f32At(buf: Buffer, at: number, n: number): Float32Array {
  return new Float32Array(buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + 4 * n));
}

/** Reads every tensor of a v0 / v1 / v2 checkpoint in the order its writer (llama2.c export.py) put them. */
function readLlama2cWeights(buf: Buffer, h: Llama2cHeader, file: string): Llama2cWeights {
  const { dim, hidden_dim: hid, n_layers: L, n_kv_heads: KV, vocab_size: V, seq_len: S } = h;
  const D = dim / h.n_heads;
  const kvDim = KV * D;
  const mat = { wq: dim * dim, wk: kvDim * dim, wv: kvDim * dim, wo: dim * dim, w1: hid * dim, w2: dim * hid };
  const perLayer = mat.wq + mat.wk + mat.wv + mat.wo + mat.w1 + mat.w2 + mat.w1;
  const norms = 2 * L * dim + dim;
  const cls = h.shared_classifier ? 0 : V * dim;
  const gs = h.group_size ?? 1;
  // v0: header 28, then float32 everything incl. RoPE tables (S x D/2, twice); v1: header 256, float32 without the
  // tables; v2: header 256, float32 norms, then per tensor its int8 values followed by its float32 group scales.
  const need =
    h.version === 0
      ? 28 + 4 * (V * dim + norms + L * perLayer + S * D + cls)
      : h.version === 1
        ? 256 + 4 * (V * dim + norms + L * perLayer + cls)
        : 256 + 4 * norms + (V * dim + L * perLayer + cls) * (1 + 4 / gs);
  if (buf.length !== need)
    throw new ImportError(`${file}: ${buf.length} bytes, but the header ${JSON.stringify(h)} implies ${need}`);
  let at = h.version === 0 ? 28 : 256;
  const take = (n: number) => {
    const a = f32At(buf, at, n);
    at += 4 * n;
    return a;
  };
  const takeQ = (n: number) => {
    const q = new Int8Array(buf.buffer, buf.byteOffset + at, n);
    const s = f32At(buf, at + n, n / gs);
    at += n + (4 * n) / gs;
    const w = new Float32Array(n);
    for (let i = 0; i < n; i++) w[i] = q[i] * s[Math.floor(i / gs)];
    return w;
  };
  const layers = (n: number, read: (n: number) => Float32Array) => Array.from({ length: L }, () => read(n));
  if (h.version === 0) {
    const emb = take(V * dim);
    const rmsAtt = take(L * dim);
    const split = (n: number) => {
      const all = take(L * n);
      return Array.from({ length: L }, (_, i) => all.subarray(i * n, (i + 1) * n));
    };
    const [wq, wk, wv, wo] = [split(mat.wq), split(mat.wk), split(mat.wv), split(mat.wo)];
    const rmsFfn = take(L * dim);
    const [w1, w2, w3] = [split(mat.w1), split(mat.w2), split(mat.w1)];
    const rmsFinal = take(dim);
    at += 4 * S * D; // freq_cis_real, freq_cis_imag: recomputed by the model
    return { emb, rmsAtt, rmsFfn, rmsFinal, wq, wk, wv, wo, w1, w2, w3, wcls: cls ? take(cls) : null };
  }
  const rmsAtt = take(L * dim);
  const rmsFfn = take(L * dim);
  const rmsFinal = take(dim);
  const read = h.version === 1 ? take : takeQ;
  const emb = read(V * dim);
  const [wq, wk, wv, wo] = [layers(mat.wq, read), layers(mat.wk, read), layers(mat.wv, read), layers(mat.wo, read)];
  const [w1, w2, w3] = [layers(mat.w1, read), layers(mat.w2, read), layers(mat.w1, read)];
  return { emb, rmsAtt, rmsFfn, rmsFinal, wq, wk, wv, wo, w1, w2, w3, wcls: cls ? read(cls) : null };
}

/** Row permutation interleaved → rotate-half for one (rows = heads·D, cols) projection. */
export function permuteRope(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const D = rows / heads;
  const half = D / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let p = 0; p < 2; p++)
      for (let i = 0; i < half; i++) {
        const dst = h * D + p * half + i;
        const src = h * D + 2 * i + p;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
  return out;
}

export interface Llama2cTokenizer {
  maxTokenLength: number;
  pieces: string[];
  scores: number[];
}

export function readLlama2cTokenizer(path: string, vocabSize?: number): Llama2cTokenizer {
  if (!existsSync(path)) throw new ImportError(`${path}: tokenizer file not found`);
  const b = readFileSync(path);
  if (b.length < 4) throw new ImportError(`${path}: truncated tokenizer`);
  const maxTokenLength = b.readInt32LE(0);
  const pieces: string[] = [];
  const scores: number[] = [];
  let o = 4;
  const dec = new TextDecoder("utf-8");
  while (o < b.length && (vocabSize === undefined || pieces.length < vocabSize)) {
    if (o + 8 > b.length) throw new ImportError(`${path}: truncated at token ${pieces.length}`);
    scores.push(b.readFloatLE(o));
    const len = b.readInt32LE(o + 4);
    o += 8;
    if (len < 0 || o + len > b.length) throw new ImportError(`${path}: token ${pieces.length} has bad length ${len}`);
    pieces.push(dec.decode(b.subarray(o, o + len)));
    o += len;
  }
  if (vocabSize !== undefined && pieces.length !== vocabSize)
    throw new ImportError(`${path}: ${pieces.length} tokens, but the model's vocab_size is ${vocabSize}`);
  return { maxTokenLength, pieces, scores };
}

const SP = "\u2581";

/**
 * An HF tokenizer.json equivalent to llama2.c's encoder (sentencepiece BPE: dummy-prefix space, score-ordered merges,
 * byte fallback), laid out like the LLaMA tokenizer.json that transformers writes.
 */
export function llama2cTokenizerJson(tok: Llama2cTokenizer): object {
  const special = ["<unk>", "<s>", "</s>"];
  const pieces = tok.pieces.map((p, i) => (i < 3 ? special[i] : p.replaceAll(" ", SP)));
  const vocab: Record<string, number> = {};
  pieces.forEach((p, i) => {
    if (!(p in vocab)) vocab[p] = i;
  });
  // Merges: every split of a non-special piece into two vocabulary pieces, ranked by the merged piece's score.
  const merges: { pair: [string, string]; score: number; id: number; l: number }[] = [];
  pieces.forEach((p, id) => {
    if (id < 3 || /^<0x[0-9A-F]{2}>$/.test(p)) return;
    const chars = [...p];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join("");
      const r = chars.slice(k).join("");
      if (l in vocab && r in vocab) merges.push({ pair: [l, r], score: tok.scores[id], id, l: vocab[l] });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.l - b.l);
  const added = special.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: SP },
        { type: "Replace", pattern: { String: " " }, content: SP },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SP }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => m.pair),
    },
  };
}

/** Converts a llama2.c checkpoint + tokenizer into an HF LLaMA folder at `out`; returns the config written. */
export function importLlama2c(modelPath: string, tokenizerPath: string, out: string): Record<string, unknown> {
  if (!existsSync(modelPath)) throw new ImportError(`${modelPath}: model file not found`);
  const buf = readFileSync(modelPath);
  const h = readLlama2cHeader(buf, modelPath);
  const { dim, hidden_dim: hid, n_layers: L, n_heads: H, n_kv_heads: KV, vocab_size: V, seq_len: S } = h;
  const kvDim = KV * (dim / H);
  const { emb, rmsAtt, rmsFfn, rmsFinal, wq, wk, wv, wo, w1, w2, w3, wcls } = readLlama2cWeights(buf, h, modelPath);

  const tok = readLlama2cTokenizer(tokenizerPath, V);
  const tensors: TensorOut[] = [];
  const t = (name: string, shape: number[], data: Float32Array) => tensors.push({ name, dtype: "F32", shape, data });
  t("model.embed_tokens.weight", [V, dim], emb);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    t(`${p}input_layernorm.weight`, [dim], rmsAtt.subarray(i * dim, (i + 1) * dim));
    t(`${p}self_attn.q_proj.weight`, [dim, dim], permuteRope(wq[i], H, dim));
    t(`${p}self_attn.k_proj.weight`, [kvDim, dim], permuteRope(wk[i], KV, dim));
    t(`${p}self_attn.v_proj.weight`, [kvDim, dim], wv[i]);
    t(`${p}self_attn.o_proj.weight`, [dim, dim], wo[i]);
    t(`${p}post_attention_layernorm.weight`, [dim], rmsFfn.subarray(i * dim, (i + 1) * dim));
    t(`${p}mlp.gate_proj.weight`, [hid, dim], w1[i]);
    t(`${p}mlp.down_proj.weight`, [dim, hid], w2[i]);
    t(`${p}mlp.up_proj.weight`, [hid, dim], w3[i]);
  }
  t("model.norm.weight", [dim], rmsFinal);
  if (wcls) t("lm_head.weight", [V, dim], wcls);

  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: dim,
    intermediate_size: hid,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    vocab_size: V,
    max_position_embeddings: S,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    hidden_act: "silu",
    tie_word_embeddings: h.shared_classifier,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
    attention_bias: false,
    mlp_bias: false,
  };
  mkdirSync(out, { recursive: true });
  saveCheckpoint(out, tensors, { metadata: { source: `llama2.c v${h.version}`, converted_by: "perp" } });
  const json = (name: string, obj: unknown) => writeFileAtomic(join(out, name), [`${JSON.stringify(obj, null, 2)}\n`]);
  json("tokenizer.json", llama2cTokenizerJson(tok));
  json("tokenizer_config.json", {
    tokenizer_class: "LlamaTokenizerFast",
    bos_token: "<s>",
    eos_token: "</s>",
    unk_token: "<unk>",
    add_bos_token: true,
    add_eos_token: false,
    model_max_length: S,
    clean_up_tokenization_spaces: false,
    legacy: true,
  });
  json("special_tokens_map.json", { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" });
  json("generation_config.json", { bos_token_id: 1, eos_token_id: 2 });
  json("config.json", config);
  return config;
}
