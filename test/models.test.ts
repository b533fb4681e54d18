// Each family: a tiny random checkpoint written in HF layout by the test (names and shapes listed here, independently
// of the model code), loaded, run, compared with a straightforward float64 forward written from the HF modeling
// files, saved and reloaded bit-exactly. Plus bad-input errors.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scoreTokens, type TokenRequest } from "../src/eval/loglik.js";
import { f32ToHalf, SafetensorsStore, saveCheckpoint, type TensorOut } from "../src/io/safetensors.js";
import { crossesRopeSwitch, generate, nextLogits } from "../src/models/generate.js";
import { KVCache, RowsKV } from "../src/models/kvcache.js";
import { invFreq, ropeAttentionFactor, ropeSettings, ropeTables } from "../src/models/llama.js";
import { loadModel, saveModel } from "../src/models/load.js";
import { buildModel, supportedModelTypes } from "../src/models/registry.js";
import { noGrad } from "../src/nn/tape.js";
import { K, refK } from "../src/tensor/native.js";
import { Rng } from "../src/tensor/rng.js";
import { bitsEqual, expectClose } from "./helpers.js";

type F64 = Float64Array<ArrayBufferLike>;
type SD = Record<string, { shape: number[]; data: Float32Array }>;
const R = refK as unknown as Record<string, (...a: unknown[]) => unknown>;
const tmp = () => mkdtempSync(join(tmpdir(), "perp-m-"));

function randomSD(spec: [string, number[]][], seed: number): SD {
  const rng = new Rng(seed);
  const sd: SD = {};
  for (const [name, shape] of spec) {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    if (/norm|ln_|layer_norm/.test(name) && name.endsWith("weight")) rng.fillNormal(d, 0.1, 1);
    else rng.fillNormal(d, name.endsWith("bias") ? 0.1 : 0.3);
    sd[name] = { shape, data: d };
  }
  return sd;
}

function writeModel(dir: string, config: object, sd: SD, dtype: "F32" | "BF16" = "F32"): void {
  const ts: TensorOut[] = Object.entries(sd).map(([name, t]) => ({
    name,
    dtype,
    shape: t.shape,
    data: dtype === "F32" ? t.data : f32ToHalf(t.data, "BF16"),
  }));
  saveCheckpoint(dir, ts);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
}

// ------------------------------------------------------------------ float64 building blocks (reference kernels)
const f = (sd: SD, n: string): F64 => {
  if (!sd[n]) throw new Error(`test: missing ${n}`);
  return Float64Array.from(sd[n].data);
};
function lin(x: F64, W: F64, b: F64 | null, M: number, out: number, inp: number, inOut = false): F64 {
  const y = new Float64Array(M * out);
  R.gemm(y, x, W, M, out, inp, false, !inOut, 1, 0);
  if (b) R.biasAdd(y, b, M, out);
  return y;
}
function ln(x: F64, w: F64, b: F64, M: number, C: number, eps = 1e-5): F64 {
  const y = new Float64Array(x.length);
  R.layernormFwd(y, null, null, x, w, b, M, C, eps);
  return y;
}
function rms(x: F64, w: F64, M: number, C: number, eps: number): F64 {
  const y = new Float64Array(x.length);
  R.rmsnormFwd(y, null, x, w, M, C, eps);
  return y;
}
// af: yarn's attention factor, multiplying cos and sin.
function ropeF64(x: F64, T: number, H: number, D: number, Rd: number, inv: number[], af = 1): F64 {
  const cos = new Float64Array((T * Rd) / 2);
  const sin = new Float64Array((T * Rd) / 2);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < Rd / 2; i++) {
      cos[(t * Rd) / 2 + i] = af * Math.cos(t * inv[i]);
      sin[(t * Rd) / 2 + i] = af * Math.sin(t * inv[i]);
    }
  const y = new Float64Array(x.length);
  R.rope(y, x, cos, sin, 1, T, H, D, Rd, false, false);
  return y;
}
function attn(q: F64, k: F64, v: F64, T: number, H: number, KV: number, D: number, window = 0, scale = 0): F64 {
  const y = new Float64Array(q.length);
  R.attentionFwd(y, null, q, k, v, 1, T, H, KV, D, scale || 1 / Math.sqrt(D), window);
  return y;
}
function act(x: F64, kind: string): F64 {
  const y = new Float64Array(x.length);
  R.actFwd(y, x, kind);
  return y;
}
const add = (a: F64, b: F64): F64 => a.map((v, i) => v + b[i]);
const mul = (a: F64, b: F64): F64 => a.map((v, i) => v * b[i]);
function emb(table: F64, ids: number[], C: number, offset = 0): F64 {
  const y = new Float64Array(ids.length * C);
  ids.forEach((id, i) => {
    for (let j = 0; j < C; j++) y[i * C + j] = table[(id + offset) * C + j];
  });
  return y;
}
function cols(x: F64, M: number, N: number, pick: (j: number) => number, J: number): F64 {
  const y = new Float64Array(M * J);
  for (let i = 0; i < M; i++) for (let j = 0; j < J; j++) y[i * J + j] = x[i * N + pick(j)];
  return y;
}

const IDS = [3, 7, 1, 22, 9, 0, 14, 5, 11];
const T = IDS.length;
const V = 23;

// ------------------------------------------------------------------ families
interface Family {
  name: string;
  config: Record<string, unknown>;
  spec: [string, number[]][];
  ref(sd: SD): F64;
}

/** The tensors of one LLaMA-style block (norms, q/k/v/o, gate/up/down) under prefix p. */
function llamaBlockSpec(p: string, C: number, I: number, H: number, KV: number, D: number): [string, number[]][] {
  return [
    [`${p}input_layernorm.weight`, [C]],
    [`${p}self_attn.q_proj.weight`, [H * D, C]],
    [`${p}self_attn.k_proj.weight`, [KV * D, C]],
    [`${p}self_attn.v_proj.weight`, [KV * D, C]],
    [`${p}self_attn.o_proj.weight`, [C, H * D]],
    [`${p}post_attention_layernorm.weight`, [C]],
    [`${p}mlp.gate_proj.weight`, [I, C]],
    [`${p}mlp.up_proj.weight`, [I, C]],
    [`${p}mlp.down_proj.weight`, [C, I]],
  ];
}

// v5: the config as transformers 5 writes it (rope_theta and the scaling inside rope_parameters).
function llama(tied: boolean, scaling: object | null, window = 0, v5 = false): Family {
  const [C, I, H, KV, L] = [16, 24, 4, 2, 2];
  const D = C / H;
  const spec: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    spec.push(...llamaBlockSpec(p, C, I, H, KV, D));
  }
  spec.push(["model.norm.weight", [C]]);
  if (!tied) spec.push(["lm_head.weight", [V, C]]);
  const config = {
    model_type: window ? "mistral" : "llama",
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    vocab_size: V,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: tied,
    ...(v5
      ? { rope_parameters: { rope_type: "default", ...scaling, rope_theta: 500 } }
      : { rope_theta: 500, rope_scaling: scaling }),
    ...(window ? { sliding_window: window } : {}),
  };
  return {
    name:
      (window ? `mistral sliding_window ${window}` : `llama${tied ? " tied" : ""}${scaling ? " rope_scaling" : ""}`) +
      (v5 ? " (transformers 5 rope_parameters)" : ""),
    config,
    spec,
    ref(sd) {
      // the frequencies from the HF references checked below ("RoPE scaling types against transformers")
      const rs = ropeSettings(config as never).scaling;
      const inv = invFreq(D, 500, rs);
      const af = ropeAttentionFactor(rs);
      let x = emb(f(sd, "model.embed_tokens.weight"), IDS, C);
      for (let l = 0; l < L; l++) {
        const p = `model.layers.${l}.`;
        const h = rms(x, f(sd, `${p}input_layernorm.weight`), T, C, 1e-6);
        const q = ropeF64(lin(h, f(sd, `${p}self_attn.q_proj.weight`), null, T, H * D, C), T, H, D, D, inv, af);
        const k = ropeF64(lin(h, f(sd, `${p}self_attn.k_proj.weight`), null, T, KV * D, C), T, KV, D, D, inv, af);
        const v = lin(h, f(sd, `${p}self_attn.v_proj.weight`), null, T, KV * D, C);
        x = add(x, lin(attn(q, k, v, T, H, KV, D, window), f(sd, `${p}self_attn.o_proj.weight`), null, T, C, H * D));
        const h2 = rms(x, f(sd, `${p}post_attention_layernorm.weight`), T, C, 1e-6);
        const g = lin(h2, f(sd, `${p}mlp.gate_proj.weight`), null, T, I, C);
        const u = lin(h2, f(sd, `${p}mlp.up_proj.weight`), null, T, I, C);
        x = add(x, lin(mul(act(g, "silu"), u), f(sd, `${p}mlp.down_proj.weight`), null, T, C, I));
      }
      const hN = rms(x, f(sd, "model.norm.weight"), T, C, 1e-6);
      return lin(hN, f(sd, tied ? "model.embed_tokens.weight" : "lm_head.weight"), null, T, V, C);
    },
  };
}

// Qwen2 (biases on q, k, v) or Qwen3 (q_norm / k_norm over each head; no biases), tied, as transformers 5 writes
// their configs: with `window`, use_sliding_window and layer_types making the second of the two blocks windowed.
function qwen(kind: "qwen2" | "qwen3", window = 0): Family {
  const [C, I, H, KV, L, D] = [16, 24, 4, 2, 2, kind === "qwen3" ? 6 : 4];
  const spec: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    spec.push(...llamaBlockSpec(p, C, I, H, KV, D));
    if (kind === "qwen2")
      spec.push(
        [`${p}self_attn.q_proj.bias`, [H * D]],
        [`${p}self_attn.k_proj.bias`, [KV * D]],
        [`${p}self_attn.v_proj.bias`, [KV * D]],
      );
    else spec.push([`${p}self_attn.q_norm.weight`, [D]], [`${p}self_attn.k_norm.weight`, [D]]);
  }
  spec.push(["model.norm.weight", [C]]);
  const config = {
    model_type: kind,
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    ...(kind === "qwen3" ? { head_dim: D, attention_bias: false } : {}),
    vocab_size: V,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: true,
    rope_parameters: { rope_type: "default", rope_theta: 1000 },
    use_sliding_window: window > 0,
    sliding_window: window || null,
    max_window_layers: 1,
    layer_types: ["full_attention", window ? "sliding_attention" : "full_attention"],
  };
  return {
    name: `${kind}${window ? ` sliding_window ${window} on block 1` : ""}`,
    config,
    spec,
    ref(sd) {
      const inv = invFreq(D, 1000, null);
      const opt = (n: string) => (sd[n] ? f(sd, n) : null);
      let x = emb(f(sd, "model.embed_tokens.weight"), IDS, C);
      for (let l = 0; l < L; l++) {
        const p = `model.layers.${l}.self_attn.`;
        const h = rms(x, f(sd, `model.layers.${l}.input_layernorm.weight`), T, C, 1e-6);
        let q = lin(h, f(sd, `${p}q_proj.weight`), opt(`${p}q_proj.bias`), T, H * D, C);
        let k = lin(h, f(sd, `${p}k_proj.weight`), opt(`${p}k_proj.bias`), T, KV * D, C);
        const v = lin(h, f(sd, `${p}v_proj.weight`), opt(`${p}v_proj.bias`), T, KV * D, C);
        if (kind === "qwen3") {
          q = rms(q, f(sd, `${p}q_norm.weight`), T * H, D, 1e-6);
          k = rms(k, f(sd, `${p}k_norm.weight`), T * KV, D, 1e-6);
        }
        q = ropeF64(q, T, H, D, D, inv);
        k = ropeF64(k, T, KV, D, D, inv);
        const a = attn(q, k, v, T, H, KV, D, l === 1 ? window : 0);
        x = add(x, lin(a, f(sd, `${p}o_proj.weight`), null, T, C, H * D));
        const m = `model.layers.${l}.mlp.`;
        const h2 = rms(x, f(sd, `model.layers.${l}.post_attention_layernorm.weight`), T, C, 1e-6);
        const g = lin(h2, f(sd, `${m}gate_proj.weight`), null, T, I, C);
        const u = lin(h2, f(sd, `${m}up_proj.weight`), null, T, I, C);
        x = add(x, lin(mul(act(g, "silu"), u), f(sd, `${m}down_proj.weight`), null, T, C, I));
      }
      const hN = rms(x, f(sd, "model.norm.weight"), T, C, 1e-6);
      return lin(hN, f(sd, "model.embed_tokens.weight"), null, T, V, C);
    },
  };
}

// Phi-3: q, k, v fused into qkv_proj and gate, up into gate_up_proj; `partial` of each head rotated; the window on
// every block; `longFrom`: longrope, switching to its long factors for forwards past that many positions.
function phi3(partial: number, window = 0, longFrom = 0): Family {
  const [C, I, H, KV, L] = [16, 24, 4, 2, 2];
  const D = C / H;
  const Rd = Math.floor(D * partial);
  const spec: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    spec.push(
      [`${p}input_layernorm.weight`, [C]],
      [`${p}self_attn.qkv_proj.weight`, [(H + 2 * KV) * D, C]],
      [`${p}self_attn.o_proj.weight`, [C, H * D]],
      [`${p}post_attention_layernorm.weight`, [C]],
      [`${p}mlp.gate_up_proj.weight`, [2 * I, C]],
      [`${p}mlp.down_proj.weight`, [C, I]],
    );
  }
  spec.push(["model.norm.weight", [C]], ["lm_head.weight", [V, C]]);
  const config = {
    model_type: "phi3",
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    vocab_size: V,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
    rope_theta: 10000,
    partial_rotary_factor: partial,
    sliding_window: window || null,
    ...(longFrom
      ? {
          original_max_position_embeddings: longFrom,
          rope_scaling: {
            type: "longrope",
            short_factor: Array.from({ length: Rd / 2 }, (_, i) => 1 + 0.3 * i),
            long_factor: Array.from({ length: Rd / 2 }, (_, i) => 1.5 + 2 * i * i),
          },
        }
      : {}),
  };
  return {
    name: `phi3 partial_rotary_factor ${partial}${window ? ` sliding_window ${window}` : ""}${longFrom ? ` longrope from ${longFrom}` : ""}`,
    config,
    spec,
    ref(sd) {
      const rs = ropeSettings(config as never).scaling;
      const inv = invFreq(Rd, 10000, rs, T > longFrom);
      const af = ropeAttentionFactor(rs);
      const pick = (a: F64, n: number, from: number, w: number) => cols(a, T, n, (j) => from + j, w);
      let x = emb(f(sd, "model.embed_tokens.weight"), IDS, C);
      for (let l = 0; l < L; l++) {
        const p = `model.layers.${l}.`;
        const h = rms(x, f(sd, `${p}input_layernorm.weight`), T, C, 1e-5);
        const N = (H + 2 * KV) * D;
        const qkv = lin(h, f(sd, `${p}self_attn.qkv_proj.weight`), null, T, N, C);
        const q = ropeF64(pick(qkv, N, 0, H * D), T, H, D, Rd, inv, af);
        const k = ropeF64(pick(qkv, N, H * D, KV * D), T, KV, D, Rd, inv, af);
        const v = pick(qkv, N, (H + KV) * D, KV * D);
        x = add(x, lin(attn(q, k, v, T, H, KV, D, window), f(sd, `${p}self_attn.o_proj.weight`), null, T, C, H * D));
        const h2 = rms(x, f(sd, `${p}post_attention_layernorm.weight`), T, C, 1e-5);
        const gu = lin(h2, f(sd, `${p}mlp.gate_up_proj.weight`), null, T, 2 * I, C);
        const [g, u] = [pick(gu, 2 * I, 0, I), pick(gu, 2 * I, I, I)];
        x = add(x, lin(mul(act(g, "silu"), u), f(sd, `${p}mlp.down_proj.weight`), null, T, C, I));
      }
      const hN = rms(x, f(sd, "model.norm.weight"), T, C, 1e-5);
      return lin(hN, f(sd, "lm_head.weight"), null, T, V, C);
    },
  };
}

// Gemma (v3: Gemma 3 text, with sandwich norms, q_norm / k_norm, query_pre_attn_scalar and a window plus a RoPE base of
// its own on the sliding blocks, 0 and 2 of 3; `v4`: its config as transformers 4 wrote it). Norms scale by 1 + weight.
function gemma(v3: boolean, v4 = false): Family {
  const [C, I, H, KV, D] = [16, 24, 4, 2, 6];
  const L = v3 ? 3 : 2;
  const spec: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    spec.push(...llamaBlockSpec(p, C, I, H, KV, D));
    if (v3)
      spec.push(
        [`${p}self_attn.q_norm.weight`, [D]],
        [`${p}self_attn.k_norm.weight`, [D]],
        [`${p}pre_feedforward_layernorm.weight`, [C]],
        [`${p}post_feedforward_layernorm.weight`, [C]],
      );
  }
  spec.push(["model.norm.weight", [C]]);
  const [window, full, local, scalar] = [3, 5000, 300, 10];
  const rope3 = v4
    ? {
        rope_theta: full,
        rope_local_base_freq: local,
        rope_scaling: { rope_type: "linear", factor: 2 },
        sliding_window_pattern: 2,
      }
    : {
        rope_parameters: {
          full_attention: { rope_type: "linear", factor: 2, rope_theta: full },
          sliding_attention: { rope_type: "default", rope_theta: local },
        },
        layer_types: ["sliding_attention", "full_attention", "sliding_attention"],
      };
  const config = {
    model_type: v3 ? "gemma3_text" : "gemma",
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    head_dim: D,
    vocab_size: V,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-6,
    pad_token_id: 0,
    hidden_activation: "gelu_pytorch_tanh",
    ...(v3 ? { ...rope3, sliding_window: window, query_pre_attn_scalar: scalar } : { rope_theta: 500 }),
  };
  return {
    name: v3 ? `gemma3_text (${v4 ? "transformers 4" : "transformers 5"} config)` : "gemma",
    config,
    spec,
    ref(sd) {
      const one = (w: F64) => w.map((x) => Math.fround(1 + x));
      const norm = (x: F64, n: string, rows = T, width = C) => rms(x, one(f(sd, n)), rows, width, 1e-6);
      const scale = 1 / Math.sqrt(v3 ? scalar : D);
      let x: F64 = emb(f(sd, "model.embed_tokens.weight"), IDS, C).map((v) => v * Math.fround(Math.sqrt(C)));
      for (let l = 0; l < L; l++) {
        const p = `model.layers.${l}.`;
        const sliding = v3 && l !== 1;
        const inv = v3
          ? sliding
            ? invFreq(D, local, null)
            : invFreq(D, full, { rope_type: "linear", factor: 2 })
          : invFreq(D, 500, null);
        const h = norm(x, `${p}input_layernorm.weight`);
        let q = lin(h, f(sd, `${p}self_attn.q_proj.weight`), null, T, H * D, C);
        let k = lin(h, f(sd, `${p}self_attn.k_proj.weight`), null, T, KV * D, C);
        const v = lin(h, f(sd, `${p}self_attn.v_proj.weight`), null, T, KV * D, C);
        if (v3) {
          q = norm(q, `${p}self_attn.q_norm.weight`, T * H, D);
          k = norm(k, `${p}self_attn.k_norm.weight`, T * KV, D);
        }
        q = ropeF64(q, T, H, D, D, inv);
        k = ropeF64(k, T, KV, D, D, inv);
        const o = lin(
          attn(q, k, v, T, H, KV, D, sliding ? window : 0, scale),
          f(sd, `${p}self_attn.o_proj.weight`),
          null,
          T,
          C,
          H * D,
        );
        const mlp = (y: F64) => {
          const g = lin(y, f(sd, `${p}mlp.gate_proj.weight`), null, T, I, C);
          const u = lin(y, f(sd, `${p}mlp.up_proj.weight`), null, T, I, C);
          return lin(mul(act(g, "gelu_tanh"), u), f(sd, `${p}mlp.down_proj.weight`), null, T, C, I);
        };
        if (v3) {
          x = add(x, norm(o, `${p}post_attention_layernorm.weight`));
          x = add(
            x,
            norm(mlp(norm(x, `${p}pre_feedforward_layernorm.weight`)), `${p}post_feedforward_layernorm.weight`),
          );
        } else {
          x = add(x, o);
          x = add(x, mlp(norm(x, `${p}post_attention_layernorm.weight`)));
        }
      }
      return lin(norm(x, "model.norm.weight"), f(sd, "model.embed_tokens.weight"), null, T, V, C);
    },
  };
}

// Phi-1/1.5/2: parallel attention and MLP after one LayerNorm, biases everywhere, partial rotary; `qk`: LayerNorms of
// each head of q and k, with GQA and exact GELU.
function phi(qk: boolean): Family {
  const [C, I, H, L, D] = [16, 24, 4, 2, 4];
  const KV = qk ? 2 : H;
  const Rd = 2; // int(4 · 0.5)
  const spec: [string, number[]][] = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    for (const [n, out, inp] of [
      ["self_attn.q_proj", H * D, C],
      ["self_attn.k_proj", KV * D, C],
      ["self_attn.v_proj", KV * D, C],
      ["self_attn.dense", C, H * D],
      ["mlp.fc1", I, C],
      ["mlp.fc2", C, I],
    ] as const)
      spec.push([`${p}${n}.weight`, [out, inp]], [`${p}${n}.bias`, [out]]);
    spec.push([`${p}input_layernorm.weight`, [C]], [`${p}input_layernorm.bias`, [C]]);
    if (qk)
      for (const n of ["q_layernorm", "k_layernorm"])
        spec.push([`${p}self_attn.${n}.weight`, [D]], [`${p}self_attn.${n}.bias`, [D]]);
  }
  spec.push(["model.final_layernorm.weight", [C]], ["model.final_layernorm.bias", [C]]);
  spec.push(["lm_head.weight", [V, C]], ["lm_head.bias", [V]]);
  const config = {
    model_type: "phi",
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    vocab_size: V,
    max_position_embeddings: 32,
    layer_norm_eps: 1e-5,
    partial_rotary_factor: 0.5,
    qk_layernorm: qk,
    hidden_act: qk ? "gelu" : "gelu_new",
    rope_theta: 10000,
  };
  return {
    name: `phi${qk ? " qk_layernorm, GQA, gelu" : ""}`,
    config,
    spec,
    ref(sd) {
      const inv = invFreq(Rd, 10000, null);
      const P = (n: string) => [f(sd, `${n}.weight`), f(sd, `${n}.bias`)] as const;
      const L_ = (x: F64, n: string, out: number, inp: number) => lin(x, ...P(n), T, out, inp);
      let x = emb(f(sd, "model.embed_tokens.weight"), IDS, C);
      for (let l = 0; l < L; l++) {
        const p = `model.layers.${l}.`;
        const h = ln(x, ...P(`${p}input_layernorm`), T, C);
        let q = L_(h, `${p}self_attn.q_proj`, H * D, C);
        let k = L_(h, `${p}self_attn.k_proj`, KV * D, C);
        if (qk) {
          q = ln(q, ...P(`${p}self_attn.q_layernorm`), T * H, D);
          k = ln(k, ...P(`${p}self_attn.k_layernorm`), T * KV, D);
        }
        const v = L_(h, `${p}self_attn.v_proj`, KV * D, C);
        const a = attn(ropeF64(q, T, H, D, Rd, inv), ropeF64(k, T, KV, D, Rd, inv), v, T, H, KV, D);
        const m = L_(act(L_(h, `${p}mlp.fc1`, I, C), qk ? "gelu" : "gelu_tanh"), `${p}mlp.fc2`, C, I);
        x = add(add(L_(a, `${p}self_attn.dense`, C, H * D), m), x);
      }
      return L_(ln(x, ...P("model.final_layernorm"), T, C), "lm_head", V, C);
    },
  };
}

// affine false: LayerNorms without weight and bias (layer_norm_elementwise_affine); bias false: enable_bias false.
function opt(pre: boolean, proj: number, affine = true, bias = true): Family {
  const [C, F_, H, L, P] = [16, 24, 4, 2, proj];
  const D = C / H;
  const spec: [string, number[]][] = [
    ["model.decoder.embed_tokens.weight", [V, P]],
    ["model.decoder.embed_positions.weight", [32 + 2, C]],
  ];
  if (P !== C) spec.push(["model.decoder.project_in.weight", [C, P]], ["model.decoder.project_out.weight", [P, C]]);
  const norm = (n: string): [string, number[]][] =>
    affine
      ? [
          [`${n}.weight`, [C]],
          [`${n}.bias`, [C]],
        ]
      : [];
  if (pre) spec.push(...norm("model.decoder.final_layer_norm"));
  for (let l = 0; l < L; l++) {
    const p = `model.decoder.layers.${l}.`;
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      spec.push([`${p}self_attn.${n}.weight`, [C, C]]);
      if (bias) spec.push([`${p}self_attn.${n}.bias`, [C]]);
    }
    spec.push(...norm(`${p}self_attn_layer_norm`), [`${p}fc1.weight`, [F_, C]], [`${p}fc2.weight`, [C, F_]]);
    if (bias) spec.push([`${p}fc1.bias`, [F_]], [`${p}fc2.bias`, [C]]);
    spec.push(...norm(`${p}final_layer_norm`));
  }
  const config = {
    model_type: "opt",
    vocab_size: V,
    hidden_size: C,
    num_hidden_layers: L,
    num_attention_heads: H,
    ffn_dim: F_,
    max_position_embeddings: 32,
    do_layer_norm_before: pre,
    word_embed_proj_dim: P,
    activation_function: "relu",
    enable_bias: bias,
    ...(affine ? {} : { layer_norm_elementwise_affine: false }),
  };
  return {
    name: `opt ${pre ? "pre-LN" : "post-LN"}${P !== C ? " project_in/out" : ""}${affine ? "" : " no LN affine"}${bias ? "" : " no biases"}`,
    config,
    spec,
    ref(sd0) {
      // Missing LayerNorm weights act as ones, missing biases as zeros.
      const sd: SD = { ...sd0 };
      for (const n of [
        "model.decoder.final_layer_norm",
        ...[0, 1].flatMap((l) =>
          ["self_attn_layer_norm", "final_layer_norm"].map((k) => `model.decoder.layers.${l}.${k}`),
        ),
      ]) {
        sd[`${n}.weight`] ??= { shape: [C], data: new Float32Array(C).fill(1) };
        sd[`${n}.bias`] ??= { shape: [C], data: new Float32Array(C) };
      }
      for (let l = 0; l < L; l++)
        for (const [n, w] of [
          ["self_attn.q_proj", C],
          ["self_attn.k_proj", C],
          ["self_attn.v_proj", C],
          ["self_attn.out_proj", C],
          ["fc1", F_],
          ["fc2", C],
        ] as const)
          sd[`model.decoder.layers.${l}.${n}.bias`] ??= { shape: [w], data: new Float32Array(w) };
      let x = emb(f(sd, "model.decoder.embed_tokens.weight"), IDS, P);
      if (P !== C) x = lin(x, f(sd, "model.decoder.project_in.weight"), null, T, C, P);
      x = add(
        x,
        emb(
          f(sd, "model.decoder.embed_positions.weight"),
          IDS.map((_, i) => i),
          C,
          2,
        ),
      );
      for (let l = 0; l < L; l++) {
        const p = `model.decoder.layers.${l}.`;
        const w = (n: string) => f(sd, `${p}${n}`);
        let h = pre ? ln(x, w("self_attn_layer_norm.weight"), w("self_attn_layer_norm.bias"), T, C) : x;
        const q = lin(h, w("self_attn.q_proj.weight"), w("self_attn.q_proj.bias"), T, C, C);
        const k = lin(h, w("self_attn.k_proj.weight"), w("self_attn.k_proj.bias"), T, C, C);
        const v = lin(h, w("self_attn.v_proj.weight"), w("self_attn.v_proj.bias"), T, C, C);
        h = add(
          x,
          lin(attn(q, k, v, T, H, H, D), w("self_attn.out_proj.weight"), w("self_attn.out_proj.bias"), T, C, C),
        );
        if (!pre) h = ln(h, w("self_attn_layer_norm.weight"), w("self_attn_layer_norm.bias"), T, C);
        const m = pre ? ln(h, w("final_layer_norm.weight"), w("final_layer_norm.bias"), T, C) : h;
        const ff = lin(
          act(lin(m, w("fc1.weight"), w("fc1.bias"), T, F_, C), "relu"),
          w("fc2.weight"),
          w("fc2.bias"),
          T,
          C,
          F_,
        );
        x = add(h, ff);
        if (!pre) x = ln(x, w("final_layer_norm.weight"), w("final_layer_norm.bias"), T, C);
      }
      if (pre)
        x = ln(x, f(sd, "model.decoder.final_layer_norm.weight"), f(sd, "model.decoder.final_layer_norm.bias"), T, C);
      if (P !== C) x = lin(x, f(sd, "model.decoder.project_out.weight"), null, T, P, C);
      return lin(x, f(sd, "model.decoder.embed_tokens.weight"), null, T, V, P);
    },
  };
}

// v5: rotary settings as transformers 5 writes them (rope_parameters: partial_rotary_factor, rope_theta).
function neox(parallel: boolean, v5 = false): Family {
  const [C, I, H, L] = [16, 24, 4, 2];
  const D = C / H;
  const Rd = 2; // rotary_pct 0.5 of D = 4
  const spec: [string, number[]][] = [["gpt_neox.embed_in.weight", [V, C]]];
  for (let l = 0; l < L; l++) {
    const p = `gpt_neox.layers.${l}.`;
    spec.push(
      [`${p}input_layernorm.weight`, [C]],
      [`${p}input_layernorm.bias`, [C]],
      [`${p}post_attention_layernorm.weight`, [C]],
      [`${p}post_attention_layernorm.bias`, [C]],
      [`${p}attention.query_key_value.weight`, [3 * C, C]],
      [`${p}attention.query_key_value.bias`, [3 * C]],
      [`${p}attention.dense.weight`, [C, C]],
      [`${p}attention.dense.bias`, [C]],
      [`${p}mlp.dense_h_to_4h.weight`, [I, C]],
      [`${p}mlp.dense_h_to_4h.bias`, [I]],
      [`${p}mlp.dense_4h_to_h.weight`, [C, I]],
      [`${p}mlp.dense_4h_to_h.bias`, [C]],
    );
  }
  spec.push(
    ["gpt_neox.final_layer_norm.weight", [C]],
    ["gpt_neox.final_layer_norm.bias", [C]],
    ["embed_out.weight", [V, C]],
  );
  const config = {
    model_type: "gpt_neox",
    vocab_size: V,
    hidden_size: C,
    num_hidden_layers: L,
    num_attention_heads: H,
    intermediate_size: I,
    ...(v5
      ? { rope_parameters: { rope_type: "default", rope_theta: 1000, partial_rotary_factor: 0.5 } }
      : { rotary_pct: 0.5, rotary_emb_base: 10000 }),
    max_position_embeddings: 32,
    layer_norm_eps: 1e-5,
    use_parallel_residual: parallel,
    hidden_act: "gelu",
    tie_word_embeddings: false,
  };
  return {
    name: `gpt_neox ${parallel ? "parallel" : "sequential"} residual${v5 ? " (transformers 5 rope_parameters)" : ""}`,
    config,
    spec,
    ref(sd) {
      const base = v5 ? 1000 : 10000;
      const inv = Array.from({ length: Rd / 2 }, (_, i) => 1 / base ** ((2 * i) / Rd));
      let x = emb(f(sd, "gpt_neox.embed_in.weight"), IDS, C);
      for (let l = 0; l < L; l++) {
        const p = `gpt_neox.layers.${l}.`;
        const w = (n: string) => f(sd, `${p}${n}`);
        const h = ln(x, w("input_layernorm.weight"), w("input_layernorm.bias"), T, C);
        const qkv = lin(h, w("attention.query_key_value.weight"), w("attention.query_key_value.bias"), T, 3 * C, C);
        // (T, H, 3, D) → q, k, v
        const part = (pp: number) => cols(qkv, T, 3 * C, (j) => Math.floor(j / D) * 3 * D + pp * D + (j % D), C);
        const q = ropeF64(part(0), T, H, D, Rd, inv);
        const k = ropeF64(part(1), T, H, D, Rd, inv);
        const a = lin(attn(q, k, part(2), T, H, H, D), w("attention.dense.weight"), w("attention.dense.bias"), T, C, C);
        const mlp = (y: F64) =>
          lin(
            act(lin(y, w("mlp.dense_h_to_4h.weight"), w("mlp.dense_h_to_4h.bias"), T, I, C), "gelu"),
            w("mlp.dense_4h_to_h.weight"),
            w("mlp.dense_4h_to_h.bias"),
            T,
            C,
            I,
          );
        if (parallel)
          x = add(
            add(x, a),
            mlp(ln(x, w("post_attention_layernorm.weight"), w("post_attention_layernorm.bias"), T, C)),
          );
        else {
          const x1 = add(x, a);
          x = add(x1, mlp(ln(x1, w("post_attention_layernorm.weight"), w("post_attention_layernorm.bias"), T, C)));
        }
      }
      x = ln(x, f(sd, "gpt_neox.final_layer_norm.weight"), f(sd, "gpt_neox.final_layer_norm.bias"), T, C);
      return lin(x, f(sd, "embed_out.weight"), null, T, V, C);
    },
  };
}

// layerScale: scale_attn_by_inverse_layer_idx (scores further divided by layer index + 1).
function gpt2(layerScale = false): Family {
  const [C, H, L] = [16, 4, 2];
  const D = C / H;
  const spec: [string, number[]][] = [
    ["transformer.wte.weight", [V, C]],
    ["transformer.wpe.weight", [32, C]],
  ];
  for (let l = 0; l < L; l++) {
    const p = `transformer.h.${l}.`;
    spec.push(
      [`${p}ln_1.weight`, [C]],
      [`${p}ln_1.bias`, [C]],
      [`${p}attn.c_attn.weight`, [C, 3 * C]],
      [`${p}attn.c_attn.bias`, [3 * C]],
      [`${p}attn.c_proj.weight`, [C, C]],
      [`${p}attn.c_proj.bias`, [C]],
      [`${p}ln_2.weight`, [C]],
      [`${p}ln_2.bias`, [C]],
      [`${p}mlp.c_fc.weight`, [C, 4 * C]],
      [`${p}mlp.c_fc.bias`, [4 * C]],
      [`${p}mlp.c_proj.weight`, [4 * C, C]],
      [`${p}mlp.c_proj.bias`, [C]],
    );
  }
  spec.push(["transformer.ln_f.weight", [C]], ["transformer.ln_f.bias", [C]]);
  const config = {
    model_type: "gpt2",
    vocab_size: V,
    n_embd: C,
    n_layer: L,
    n_head: H,
    n_positions: 32,
    activation_function: "gelu_new",
    ...(layerScale ? { scale_attn_by_inverse_layer_idx: true } : {}),
  };
  return {
    name: layerScale ? "gpt2 scale_attn_by_inverse_layer_idx" : "gpt2",
    config,
    spec,
    ref(sd) {
      let x = add(
        emb(f(sd, "transformer.wte.weight"), IDS, C),
        emb(
          f(sd, "transformer.wpe.weight"),
          IDS.map((_, i) => i),
          C,
        ),
      );
      for (let l = 0; l < L; l++) {
        const p = `transformer.h.${l}.`;
        const w = (n: string) => f(sd, `${p}${n}`);
        const h = ln(x, w("ln_1.weight"), w("ln_1.bias"), T, C);
        const qkv = lin(h, w("attn.c_attn.weight"), w("attn.c_attn.bias"), T, 3 * C, C, true);
        const part = (pp: number) => cols(qkv, T, 3 * C, (j) => pp * C + j, C);
        x = add(
          x,
          lin(
            attn(part(0), part(1), part(2), T, H, H, D, 0, 1 / Math.sqrt(D) / (layerScale ? l + 1 : 1)),
            w("attn.c_proj.weight"),
            w("attn.c_proj.bias"),
            T,
            C,
            C,
            true,
          ),
        );
        const h2 = ln(x, w("ln_2.weight"), w("ln_2.bias"), T, C);
        const m = act(lin(h2, w("mlp.c_fc.weight"), w("mlp.c_fc.bias"), T, 4 * C, C, true), "gelu_tanh");
        x = add(x, lin(m, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"), T, C, 4 * C, true));
      }
      x = ln(x, f(sd, "transformer.ln_f.weight"), f(sd, "transformer.ln_f.bias"), T, C);
      return lin(x, f(sd, "transformer.wte.weight"), null, T, V, C);
    },
  };
}

const FAMILIES: Family[] = [
  llama(false, null),
  llama(true, {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 16,
  }),
  llama(false, { type: "linear", factor: 2 }),
  llama(false, { type: "yarn", factor: 4, original_max_position_embeddings: 8 }),
  llama(false, { rope_type: "dynamic", factor: 2 }, 0, true),
  llama(false, null, 4),
  llama(false, { rope_type: "linear", factor: 2 }, 0, true),
  qwen("qwen2"),
  qwen("qwen2", 3),
  qwen("qwen3"),
  qwen("qwen3", 4),
  phi3(1),
  phi3(0.5, 3),
  phi3(1, 0, 6),
  phi3(0.5, 0, 11),
  phi(false),
  phi(true),
  gemma(false),
  gemma(true),
  gemma(true, true),
  opt(true, 16),
  opt(false, 12),
  opt(true, 16, false, false),
  neox(true),
  neox(false),
  neox(false, true),
  gpt2(),
  gpt2(true),
];

describe.each(FAMILIES)("$name", (fam) => {
  it("loads HF layout, matches the float64 reference forward, saves and reloads bit-exactly", async () => {
    const dir = tmp();
    const sd = randomSD(fam.spec, 1);
    writeModel(dir, fam.config, sd);
    const m = await loadModel(dir);
    expect(m.unused).toEqual([]);
    const logits = noGrad(() => m.model.forward(Int32Array.from(IDS), 1, T));
    expect(logits.shape).toEqual([T, V]);
    expectClose(logits.data, fam.ref(sd), 1e-5, 1e-5, `${fam.name} logits`);

    const out = tmp();
    saveModel(out, m);
    const a = new SafetensorsStore(dir);
    const b = new SafetensorsStore(out);
    expect(b.names.sort()).toEqual(a.names.sort());
    for (const n of a.names) {
      expect(b.info(n).dtype).toBe(a.info(n).dtype);
      expect(Buffer.compare(Buffer.from(b.file(n).bytes(n)), Buffer.from(a.file(n).bytes(n)))).toBe(0);
    }
    expect(JSON.parse(readFileSync(join(out, "config.json"), "utf8"))).toEqual(fam.config);
    const m2 = await loadModel(out);
    const l2 = noGrad(() => m2.model.forward(Int32Array.from(IDS), 1, T));
    expect(bitsEqual(l2.data, logits.data)).toBe(true);
  });
});

describe.each(FAMILIES)("$name, head untied for training", (fam) => {
  it("untieHead() registers a copy of the tied table (the same logits), saves it untied, and is idempotent", async () => {
    const dir = tmp();
    writeModel(dir, fam.config, randomSD(fam.spec, 2));
    const lm = await loadModel(dir);
    const m = lm.model;
    const before = noGrad(() => m.forward(Int32Array.from(IDS), 1, T));
    const tied = m.tiedNames.length > 0;
    const head = m.untieHead();
    expect(m.untieHead()).toBe(head);
    expect(m.tiedNames).toEqual([]);
    if (tied) expect(m.config.tie_word_embeddings).toBe(false);
    const names = m.namedParameters().map(([n]) => n);
    expect(names.filter((n) => /^(lm_head|embed_out)\.weight$/.test(n))).toHaveLength(1);
    const after = noGrad(() => m.forward(Int32Array.from(IDS), 1, T));
    expect(bitsEqual(after.data, before.data)).toBe(true);
    const out = tmp();
    saveModel(out, lm);
    const re = await loadModel(out);
    expect(re.unused).toEqual([]);
    expect(re.model.tiedNames).toEqual([]);
    expect(bitsEqual(noGrad(() => re.model.forward(Int32Array.from(IDS), 1, T)).data, before.data)).toBe(true);
  });
});

describe.each(FAMILIES)("$name with a KV cache", (fam) => {
  it("gives the logits and greedy tokens of re-running the whole context, past the context length too", async () => {
    const dir = tmp();
    writeModel(dir, fam.config, randomSD(fam.spec, 2));
    const { model } = await loadModel(dir);
    // step by step: the prompt, then one token at a time, against the whole sequence run from scratch
    const cache = new KVCache(model.numBlocks, model.maxContext);
    const seq = [...IDS];
    let fresh = [...IDS];
    for (let s = 0; s < 6; s++) {
      // longrope: past its switch the keys cached so far are recomputed (as generate does, and transformers' Phi-3)
      if (crossesRopeSwitch(model, cache.length, fresh.length)) {
        cache.reset();
        fresh = [...seq];
      }
      const cached = nextLogits(model, fresh, cache);
      expect(cache.length).toBe(seq.length);
      expectClose(cached, nextLogits(model, seq), 1e-6, 1e-6, `${fam.name} step ${s}`);
      const next = (s * 5 + 2) % V;
      seq.push(next);
      fresh = [next];
    }
    // 30 new tokens after 9: the last 7 steps run past the 32-token context (left-cropped, from scratch)
    const opts = { maxNewTokens: 30 };
    expect([...generate(model, IDS, opts)]).toEqual([...generate(model, IDS, { ...opts, cache: false })]);
    const hot = { maxNewTokens: 30, temperature: 2, seed: 5 };
    expect([...generate(model, IDS, hot)]).toEqual([...generate(model, IDS, { ...hot, cache: false })]);
  });
});

describe.each(FAMILIES)("$name, contexts shared by their continuations (RowsKV)", (fam) => {
  it("scores every request bit for bit as running it whole", async () => {
    const dir = tmp();
    writeModel(dir, fam.config, randomSD(fam.spec, 4));
    const { model } = await loadModel(dir);
    const rng = new Rng(7);
    const toks = (n: number) => Array.from({ length: n }, () => rng.int(V));
    const reqs: TokenRequest[] = [];
    // contexts of 1-20 tokens with 1-5 continuations of 1-12 (some sharing all but their last token, some repeated)
    for (let c = 0; c < 9; c++) {
      const ctx = toks(1 + rng.int(20));
      const n = 1 + rng.int(5);
      for (let j = 0; j < n; j++) {
        const cont =
          j > 0 && j % 3 === 0 ? [...reqs[reqs.length - 1].cont.slice(0, -1), rng.int(V)] : toks(1 + rng.int(12));
        reqs.push({ ctx, cont });
      }
      if (c % 4 === 0) reqs.push({ ...reqs[reqs.length - 1] });
    }
    reqs.push({ ctx: toks(30), cont: toks(5) }, { ctx: reqs[0].ctx, cont: toks(40) }); // truncated: run whole
    for (const maxBatchTokens of [4096, 40]) {
      const shared = scoreTokens(model, reqs, { maxBatchTokens });
      const whole = scoreTokens(model, reqs, { maxBatchTokens, share: false });
      expect(shared.stats.truncated).toBe(2);
      // (longrope switching after 6 positions: nearly every request runs whole, its context too short to share)
      if ((model.ropeSwitch ?? Number.POSITIVE_INFINITY) > 10)
        expect(shared.stats.tokens).toBeLessThan(whole.stats.tokens);
      shared.results.forEach((r, i) => {
        expect(r.logprob, `request ${i}`).toBe(whole.results[i].logprob);
        expect(r.greedy).toBe(whole.results[i].greedy);
      });
    }
    // longrope: batches give what one request at a time gives, no row padded across the switch. (Not asserted for
    // the others: products 32 or fewer wide with K >= 64, GPT-2's 16-wide c_proj here, take the GEMM's inner-product
    // path from 64 rows on, whose sums are ordered differently; real models have no such layer.)
    if (model.ropeSwitch !== undefined) {
      const single = scoreTokens(model, reqs, { maxBatchTokens: 1, share: false }).results;
      const batched = scoreTokens(model, reqs, { maxBatchTokens: 4096, share: false }).results;
      expect(batched.map((r) => r.logprob)).toEqual(single.map((r) => r.logprob));
    }
    // and whatever the thread count
    const before = K.threads();
    const withThreads = (n: number) => {
      K.setThreads(n);
      try {
        return scoreTokens(model, reqs, { maxBatchTokens: 40 }).results;
      } finally {
        K.setThreads(before);
      }
    };
    const [one, two] = [withThreads(1), withThreads(2)];
    expect(one.map((r) => r.logprob)).toEqual(two.map((r) => r.logprob));
  });
});

describe("RowsKV, bad use", () => {
  it("refuses another batch, a second forward, a short prefix, a missing source and use with gradients on", async () => {
    const dir = tmp();
    const fam = FAMILIES[0];
    writeModel(dir, fam.config, randomSD(fam.spec, 3));
    const { model } = await loadModel(dir);
    const ids = Int32Array.from([...IDS, ...IDS]);
    const pre = new RowsKV(model.numBlocks, new Int32Array(2));
    expect(() => noGrad(() => model.hidden(ids, 1, 2 * T, { cache: pre }))).toThrow(/prefix lengths for a batch/);
    expect(() => model.hidden(ids, 2, T, { cache: pre })).toThrow(/inference only/);
    noGrad(() => model.hidden(ids, 2, T, { cache: pre }));
    expect(() => noGrad(() => model.hidden(ids, 2, T, { cache: pre }))).toThrow(/already ran/);
    expect(pre.rowKV(0, 1).k.length).toBeGreaterThan(0);
    expect(() => pre.rowKV(0, 2)).toThrow(/has not run/);
    const after = new RowsKV(model.numBlocks, Int32Array.from([T, T + 1]), (i, b) => pre.rowKV(i, b));
    expect(() => noGrad(() => model.hidden(ids.subarray(0, 2), 2, 1, { cache: after }))).toThrow(/10 needed/);
    const next = new RowsKV(model.numBlocks, Int32Array.from([T, 2]), (i, b) => pre.rowKV(i, b));
    noGrad(() => model.hidden(ids.subarray(0, 2), 2, 1, { cache: next }));
    expect(() => next.rowKV(0, 0)).toThrow(/cannot be one/);
    expect(() => new RowsKV(model.numBlocks, Int32Array.from([1]))).toThrow(/without a prefix source/);
    expect(() => new RowsKV(model.numBlocks, Int32Array.from([-1]), () => pre.rowKV(0, 0))).toThrow(/negative/);
  });
});

describe("KV cache, bad use", () => {
  it("refuses a batch, a block it has no room for, a forward past its capacity and use with gradients on", async () => {
    const dir = tmp();
    const fam = FAMILIES[0];
    writeModel(dir, fam.config, randomSD(fam.spec, 3));
    const { model } = await loadModel(dir);
    const ids = Int32Array.from(IDS);
    const cache = new KVCache(model.numBlocks, 12);
    expect(() => noGrad(() => model.hidden(Int32Array.from([...IDS, ...IDS]), 2, T, { cache }))).toThrow(/batch 2/);
    expect(() => cache.block(model.numBlocks, 1, 1)).toThrow(/block/);
    expect(() => model.hidden(ids, 1, T, { cache })).toThrow(/inference only/);
    noGrad(() => model.hidden(ids, 1, T, { cache }));
    expect(cache.length).toBe(T);
    expect(() => noGrad(() => model.hidden(ids.subarray(0, 4), 1, 4, { cache }))).toThrow(/exceed its capacity 12/);
    expect(cache.length).toBe(T);
    expect(() => new KVCache(0, 4)).toThrow(RangeError);
  });
});

// inv_freq and attention_scaling of transformers 5.18's ROPE_INIT_FUNCTIONS for a LlamaConfig with head_dim 16,
// rope_theta 500, max_position_embeddings 64 and each rope_scaling below (printed by scripts/xcheck/rope_ref.py);
// float32 values written out exactly.
const HF_ROPE: Record<
  string,
  { scaling: Record<string, unknown> | null; af: number; inv: number[]; invLong?: number[] }
> = {
  default: {
    scaling: null,
    af: 1.0,
    inv: [
      1.0, 0.4598632752895355, 0.2114742398262024, 0.09724924713373184, 0.04472136124968529, 0.020565712824463844,
      0.009457415901124477, 0.004349118564277887,
    ],
  },
  linear: {
    scaling: { rope_type: "linear", factor: 2.0 },
    af: 1.0,
    inv: [
      0.5, 0.22993163764476776, 0.1057371199131012, 0.04862462356686592, 0.022360680624842644, 0.010282856412231922,
      0.004728707950562239, 0.0021745592821389437,
    ],
  },
  llama3_orig: {
    scaling: {
      rope_type: "llama3",
      factor: 8.0,
      low_freq_factor: 1.0,
      high_freq_factor: 4.0,
      original_max_position_embeddings: 16,
    },
    af: 1.0,
    inv: [
      0.5760563611984253, 0.08042290806770325, 0.0264342799782753, 0.01215615589171648, 0.005590170156210661,
      0.0025707141030579805, 0.0011821769876405597, 0.0005436398205347359,
    ],
  },
  llama3_noorig: {
    scaling: { rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0 },
    af: 1.0,
    inv: [
      1.0, 0.4598632752895355, 0.09761662781238556, 0.01215615589171648, 0.005590170156210661, 0.0025707141030579805,
      0.0011821769876405597, 0.0005436398205347359,
    ],
  },
  dynamic: {
    scaling: { rope_type: "dynamic", factor: 2.0 },
    af: 1.0,
    inv: [
      1.0, 0.4598632752895355, 0.2114742398262024, 0.09724924713373184, 0.04472136124968529, 0.020565712824463844,
      0.009457415901124477, 0.004349118564277887,
    ],
  },
  yarn: {
    scaling: { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 16 },
    af: 1.138629436111989,
    inv: [
      1.0, 0.28741455078125, 0.0528685599565506, 0.02431231178343296, 0.011180340312421322, 0.005141428206115961,
      0.0023643539752811193, 0.0010872796410694718,
    ],
  },
  yarn_noorig: {
    scaling: { type: "yarn", factor: 4.0 },
    af: 1.138629436111989,
    inv: [
      1.0, 0.34489744901657104, 0.1057371199131012, 0.02431231178343296, 0.011180340312421322, 0.005141428206115961,
      0.0023643539752811193, 0.0010872796410694718,
    ],
  },
  yarn_attn: {
    scaling: {
      rope_type: "yarn",
      factor: 4.0,
      original_max_position_embeddings: 16,
      attention_factor: 0.75,
      beta_fast: 16,
      beta_slow: 2,
    },
    af: 0.75,
    inv: [
      1.0, 0.11496581882238388, 0.0528685599565506, 0.02431231178343296, 0.011180340312421322, 0.005141428206115961,
      0.0023643539752811193, 0.0010872796410694718,
    ],
  },
  yarn_mscale: {
    scaling: { rope_type: "yarn", factor: 40.0, original_max_position_embeddings: 8, mscale: 1.0, mscale_all_dim: 0.5 },
    af: 1.1557219901962608,
    inv: [
      1.0, 0.011496582068502903, 0.005286856088787317, 0.0024312310852110386, 0.0011180340079590678,
      0.0005141427973285317, 0.00023643538588657975, 0.00010872795974137262,
    ],
  },
  yarn_notrunc: {
    scaling: { rope_type: "yarn", factor: 3.0, original_max_position_embeddings: 16, truncate: false },
    af: 1.109861228866811,
    inv: [
      1.0, 0.2050725817680359, 0.07049141079187393, 0.032416414469480515, 0.014907119795680046, 0.0068552372977137566,
      0.0031524719670414925, 0.0014497061492875218,
    ],
  },
  yarn_nofactor: {
    scaling: { rope_type: "yarn", factor: null, original_max_position_embeddings: 16 },
    af: 1.138629436111989,
    inv: [
      1.0, 0.28741455078125, 0.0528685599565506, 0.02431231178343296, 0.011180340312421322, 0.005141428206115961,
      0.0023643539752811193, 0.0010872796410694718,
    ],
  },
  longrope: {
    scaling: {
      rope_type: "longrope",
      short_factor: [1.0, 1.05, 1.1, 1.3, 1.7, 2.2, 3.0, 4.5],
      long_factor: [1.2, 1.9, 2.7, 4.1, 7.5, 13.0, 21.0, 40.0],
      original_max_position_embeddings: 16,
    },
    af: 1.224744871391589,
    inv: [
      1.0, 0.4379650354385376, 0.19224931299686432, 0.07480711489915848, 0.02630668133497238, 0.009348050691187382,
      0.0031524719670414925, 0.0009664706885814667,
    ],
    invLong: [
      0.8333333134651184, 0.24203330278396606, 0.07832379639148712, 0.02371932752430439, 0.005962848197668791,
      0.0015819778200238943, 0.00045035313814878464, 0.00010872795974137262,
    ],
  },
  longrope_attn: {
    scaling: {
      type: "longrope",
      short_factor: [1, 1, 1, 1, 1, 1, 1, 1],
      long_factor: [2, 2, 2, 2, 2, 2, 2, 2],
      original_max_position_embeddings: 8,
      factor: 3.0,
      attention_factor: 0.9,
    },
    af: 0.9,
    inv: [
      1.0, 0.4598632752895355, 0.2114742398262024, 0.09724924713373184, 0.04472136124968529, 0.020565712824463844,
      0.009457415901124477, 0.004349118564277887,
    ],
    invLong: [
      0.5, 0.22993163764476776, 0.1057371199131012, 0.04862462356686592, 0.022360680624842644, 0.010282856412231922,
      0.004728707950562239, 0.0021745592821389437,
    ],
  },
};

describe("RoPE scaling types against transformers", () => {
  it.each(Object.entries(HF_ROPE))("%s", (_, ref) => {
    const { theta, scaling } = ropeSettings({
      rope_theta: 500,
      rope_scaling: ref.scaling,
      max_position_embeddings: 64,
    });
    const inv = invFreq(16, theta, scaling);
    expect(inv.length).toBe(ref.inv.length);
    for (let i = 0; i < inv.length; i++) expect(Math.abs(inv[i] - ref.inv[i])).toBeLessThanOrEqual(1.2e-7 * ref.inv[i]);
    // longrope: the long factors once a forward reaches past the pretraining context
    const invLong = ref.invLong;
    if (invLong) {
      const il = invFreq(16, theta, scaling, true);
      for (let i = 0; i < il.length; i++) expect(Math.abs(il[i] - invLong[i])).toBeLessThanOrEqual(1.2e-7 * invLong[i]);
    }
    expect(ropeAttentionFactor(scaling)).toBeCloseTo(ref.af, 14);
    // yarn scales cos and sin (in float32) by its factor
    const tab = ropeTables(3, 16, theta, false, scaling);
    expect(tab.cos[0]).toBe(Math.fround(ref.af));
  });
  it("the config is left as it was, and unknown types are refused by name", () => {
    const cfg = { rope_theta: 500, rope_scaling: { rope_type: "yarn", factor: null }, max_position_embeddings: 64 };
    const before = JSON.stringify(cfg);
    ropeSettings(cfg as never);
    expect(JSON.stringify(cfg)).toBe(before);
    expect(() => invFreq(16, 500, { rope_type: "mrope" })).toThrow(/unsupported rope_scaling type 'mrope'/);
    expect(() => invFreq(16, 500, { rope_type: "longrope", short_factor: [1, 2] })).toThrow(
      /longrope short_factor must be 8 positive numbers/,
    );
  });
});

describe("dtypes, sharding and bad input", () => {
  it("checkpoints saved from the base model (no 'transformer.' / 'model.' prefix, as gpt2's and facebook/opt's) load", async () => {
    for (const fam of [gpt2(), opt(true, 16)]) {
      const sd = randomSD(fam.spec, 4);
      const prefix = fam.spec[0][0].split(".")[0];
      const bare: SD = {};
      for (const [n, t] of Object.entries(sd)) bare[n.slice(prefix.length + 1)] = t;
      if (prefix === "transformer") bare["h.0.attn.bias"] = { shape: [1, 1, 32, 32], data: new Float32Array(1024) };
      const dir = tmp();
      writeModel(dir, fam.config, bare);
      const m = await loadModel(dir);
      expect(m.unused).toEqual([]);
      const logits = noGrad(() => m.model.forward(Int32Array.from(IDS), 1, T));
      expectClose(logits.data, fam.ref(sd), 1e-5, 1e-5, `${fam.name} from base-model names`);
      const out = tmp();
      saveModel(out, m); // written with the full names, as transformers saves the LM
      expect(new SafetensorsStore(out).names.sort()).toEqual(Object.keys(sd).sort());
    }
  });

  it("BF16 checkpoints load (widened exactly) and save back as BF16, bit-exact", async () => {
    const fam = FAMILIES[0];
    const dir = tmp();
    writeModel(dir, fam.config, randomSD(fam.spec, 2), "BF16");
    const m = await loadModel(dir);
    const out = tmp();
    saveModel(out, m, { maxShardBytes: 2000 });
    const a = new SafetensorsStore(dir);
    const b = new SafetensorsStore(out);
    expect(b.weightMap.size).toBe(a.weightMap.size);
    expect(new Set(b.weightMap.values()).size).toBeGreaterThan(1);
    for (const n of a.names)
      expect(Buffer.compare(Buffer.from(b.file(n).bytes(n)), Buffer.from(a.file(n).bytes(n)))).toBe(0);
  });

  it("missing tensor, wrong shape, unknown model_type, inconsistent sizes: clear errors", async () => {
    const fam = FAMILIES[0];
    const sd = randomSD(fam.spec, 3);
    const missing = tmp();
    const { "model.layers.1.mlp.up_proj.weight": _, ...rest } = sd;
    writeModel(missing, fam.config, rest);
    await expect(loadModel(missing)).rejects.toThrow(
      /tensor 'model.layers.1.mlp.up_proj.weight' required by config.json .* is missing/,
    );
    const shape = tmp();
    writeModel(shape, { ...fam.config, intermediate_size: 20 }, sd);
    await expect(loadModel(shape)).rejects.toThrow(/has shape \[24,16\] but config.json implies \[20,16\]/);
    const unknown = tmp();
    writeModel(unknown, { ...fam.config, model_type: "mamba" }, sd);
    await expect(loadModel(unknown)).rejects.toThrow(
      new RegExp(`unsupported model_type 'mamba' \\(supported: ${supportedModelTypes().join(", ")}\\)`),
    );
    const bad = tmp();
    writeModel(bad, { ...fam.config, num_attention_heads: 5 }, sd);
    await expect(loadModel(bad)).rejects.toThrow(/config.json: hidden_size 16, num_attention_heads 5 .* inconsistent/);
    await expect(loadModel(join(tmp(), "nope"))).rejects.toThrow(/not a Hugging Face model id|no such folder/);
    // RoPE settings perp cannot honour are refused, never silently replaced by the defaults.
    const rope = async (extra: object) => {
      const d = tmp();
      writeModel(d, { ...fam.config, rope_theta: undefined, rope_scaling: undefined, ...extra }, sd);
      return loadModel(d);
    };
    await expect(rope({ rope_parameters: { rope_type: "mrope", factor: 2, rope_theta: 500 } })).rejects.toThrow(
      /unsupported rope_scaling type 'mrope'/,
    );
    // longrope without its factors: named, and the file named once
    await expect(rope({ rope_parameters: { rope_type: "longrope", factor: 2, rope_theta: 500 } })).rejects.toThrow(
      /\/config\.json: longrope short_factor must be \d+ positive numbers/,
    );
    await expect(
      rope({ rope_parameters: { full_attention: { rope_type: "default", rope_theta: 500 } } }),
    ).rejects.toThrow(/rope_parameters given per layer type \(full_attention\) are not supported/);
    await expect(
      rope({ rope_parameters: { rope_type: "default", rope_theta: 500, partial_rotary_factor: 0.5 } }),
    ).rejects.toThrow(/partial_rotary_factor 0.5 is not supported/);
  });

  it("what the newer families' transformers classes do and perp does not: refused by name, config.json named once", () => {
    const base = {
      hidden_size: 16,
      intermediate_size: 24,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      vocab_size: 11,
    };
    const refused: [object, RegExp][] = [
      [{ model_type: "gemma3_text", attn_logit_softcapping: 50 }, /attn_logit_softcapping 50 is not supported/],
      [{ model_type: "gemma3_text", final_logit_softcapping: 30 }, /final_logit_softcapping 30 is not supported/],
      [{ model_type: "gemma3_text", use_bidirectional_attention: true }, /use_bidirectional_attention/],
      [{ model_type: "gemma", hidden_activation: "relu" }, /hidden activation 'relu' is not supported for Gemma/],
      [{ model_type: "phi", tie_word_embeddings: true }, /tie_word_embeddings is not supported for Phi/],
      [{ model_type: "phi", hidden_act: "mish" }, /unsupported hidden_act 'mish'/],
      [{ model_type: "phi", partial_rotary_factor: 1.5 }, /partial_rotary_factor must be in \(0, 1\], got 1.5/],
      [{ model_type: "gemma3" }, /unsupported model_type 'gemma3'/],
    ];
    for (const [extra, re] of refused) {
      expect(() => buildModel({ ...base, ...extra })).toThrow(re);
      expect(() => buildModel({ ...base, ...extra })).toThrow(/^config\.json: (?!config\.json)/);
    }
  });
});

describe("tokenizer files", () => {
  it("a folder without tokenizer.json loads (no tokenizer) and Tokenizer.fromDir names the missing file", async () => {
    const { Tokenizer } = await import("../src/io/tokenizer.js");
    const fam = FAMILIES[0];
    const dir = tmp();
    writeModel(dir, fam.config, randomSD(fam.spec, 4));
    expect((await loadModel(dir)).tokenizer).toBeNull();
    expect(() => Tokenizer.fromDir(dir)).toThrow(new RegExp(`${dir}: missing tokenizer.json`));
  });

  it("GPT-2-style vocab.json + merges.txt (facebook/opt-* ship no tokenizer.json) convert as transformers does", async () => {
    const { Tokenizer } = await import("../src/io/tokenizer.js");
    // GPT-2's byte → printable character table
    const bs: number[] = [];
    for (const [a, b] of [
      [33, 126],
      [161, 172],
      [174, 255],
    ])
      for (let i = a; i <= b; i++) bs.push(i);
    const chars = new Map<number, string>(bs.map((b) => [b, String.fromCodePoint(b)]));
    for (let b = 0, n = 0; b < 256; b++) if (!chars.has(b)) chars.set(b, String.fromCodePoint(256 + n++));
    const vocab: Record<string, number> = {};
    for (let b = 0; b < 256; b++) vocab[chars.get(b)!] = b;
    const merges = ["h e", "l l", "he ll", "hell o", "Ġ w"];
    for (const m of merges) vocab[m.replace(" ", "")] = Object.keys(vocab).length;
    vocab["</s>"] = Object.keys(vocab).length;
    const write = (config: object) => {
      const d = tmp();
      writeFileSync(join(d, "vocab.json"), JSON.stringify(vocab));
      writeFileSync(join(d, "merges.txt"), `#version: 0.2\n${merges.join("\n")}\n`);
      writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify(config));
      return Tokenizer.fromDir(d);
    };
    const gpt2 = write({ bos_token: "</s>", eos_token: "</s>" });
    const ids = (s: string) => [...s].map((c) => vocab[c]);
    expect(gpt2.encode("hello world")).toEqual([vocab.hello, vocab.Ġw, ...ids("orld")]);
    expect(gpt2.encode("hi</s>")).toEqual([...ids("hi"), vocab["</s>"]]); // special tokens match whole
    expect(gpt2.decode(gpt2.encode("hello world"))).toBe("hello world");
    const opt = write({ bos_token: "</s>", eos_token: "</s>", add_bos_token: true });
    expect(opt.encode("hello")).toEqual([vocab["</s>"], vocab.hello]);
    expect(opt.encode("hello", false)).toEqual([vocab.hello]);
    expect(write({ add_prefix_space: true }).encode("world")).toEqual([vocab.Ġw, ...ids("orld")]);
    expect(() => write({ bos_token: "<s>", add_bos_token: true })).toThrow(/bos_token is not in vocab.json/);
  });
});
