// llama2.c import (karpathy/llama2.c run.c "legacy" v0 checkpoints and tokenizer.bin) → an HF LLaMA folder.
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
}

export class ImportError extends Error {}

export function readLlama2cHeader(buf: Buffer, file: string): Llama2cHeader {
  if (buf.length < 28) throw new ImportError(`${file}: truncated (${buf.length} bytes; the header alone is 28)`);
  if (buf.readUInt32LE(0) === 0x616b3432)
    throw new ImportError(
      `${file}: llama2.c version-1/2 export ("ak42" magic) is not supported; export with --version 0`,
    );
  const h = [0, 1, 2, 3, 4, 5, 6].map((i) => buf.readInt32LE(4 * i));
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vs, seq_len] = h;
  const hdr = {
    dim,
    hidden_dim,
    n_layers,
    n_heads,
    n_kv_heads,
    vocab_size: Math.abs(vs),
    seq_len,
    shared_classifier: vs > 0,
  };
  if (!(dim > 0 && hidden_dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && seq_len > 0 && vs !== 0))
    throw new ImportError(`${file}: implausible header ${JSON.stringify(hdr)}`);
  if (dim % n_heads !== 0 || n_heads % n_kv_heads !== 0 || (dim / n_heads) % 2 !== 0)
    throw new ImportError(`${file}: dim ${dim}, heads ${n_heads}, kv heads ${n_kv_heads} are inconsistent`);
  return hdr;
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
  const D = dim / H;
  const kvDim = KV * D;
  const sizes = {
    emb: V * dim,
    rmsAtt: L * dim,
    wq: L * dim * dim,
    wk: L * kvDim * dim,
    wv: L * kvDim * dim,
    wo: L * dim * dim,
    rmsFfn: L * dim,
    w1: L * hid * dim,
    w2: L * dim * hid,
    w3: L * hid * dim,
    rmsFinal: dim,
    freqs: S * D, // freq_cis_real + freq_cis_imag, (S, D/2) each
    wcls: h.shared_classifier ? 0 : V * dim,
  };
  const total = Object.values(sizes).reduce((a, b) => a + b, 0);
  const need = 28 + 4 * total;
  if (buf.length !== need)
    throw new ImportError(`${modelPath}: ${buf.length} bytes, but the header ${JSON.stringify(h)} implies ${need}`);
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + need));
  let off = 0;
  const take = (n: number) => {
    const a = all.subarray(off, off + n);
    off += n;
    return a;
  };
  const emb = take(sizes.emb);
  const rmsAtt = take(sizes.rmsAtt);
  const wq = take(sizes.wq);
  const wk = take(sizes.wk);
  const wv = take(sizes.wv);
  const wo = take(sizes.wo);
  const rmsFfn = take(sizes.rmsFfn);
  const w1 = take(sizes.w1);
  const w2 = take(sizes.w2);
  const w3 = take(sizes.w3);
  const rmsFinal = take(sizes.rmsFinal);
  take(sizes.freqs);
  const wcls = h.shared_classifier ? null : take(sizes.wcls);

  const tok = readLlama2cTokenizer(tokenizerPath, V);
  const tensors: TensorOut[] = [];
  const t = (name: string, shape: number[], data: Float32Array) => tensors.push({ name, dtype: "F32", shape, data });
  t("model.embed_tokens.weight", [V, dim], emb);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    const sl = (a: Float32Array, n: number) => a.subarray(i * n, (i + 1) * n);
    t(`${p}input_layernorm.weight`, [dim], sl(rmsAtt, dim));
    t(`${p}self_attn.q_proj.weight`, [dim, dim], permuteRope(sl(wq, dim * dim), H, dim));
    t(`${p}self_attn.k_proj.weight`, [kvDim, dim], permuteRope(sl(wk, kvDim * dim), KV, dim));
    t(`${p}self_attn.v_proj.weight`, [kvDim, dim], sl(wv, kvDim * dim));
    t(`${p}self_attn.o_proj.weight`, [dim, dim], sl(wo, dim * dim));
    t(`${p}post_attention_layernorm.weight`, [dim], sl(rmsFfn, dim));
    t(`${p}mlp.gate_proj.weight`, [hid, dim], sl(w1, hid * dim));
    t(`${p}mlp.down_proj.weight`, [dim, hid], sl(w2, dim * hid));
    t(`${p}mlp.up_proj.weight`, [hid, dim], sl(w3, hid * dim));
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
  saveCheckpoint(out, tensors, { metadata: { source: "llama2.c", converted_by: "perp" } });
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
