// Gradients of every differentiable op and of a whole LLaMA decoder block against float64 finite differences of the
// TS reference kernels; plus: frozen weights never get a weight-gradient GEMM; checkpointing gives the same grads.
import { describe, expect, it } from "vitest";
import { LLAMA768, stepFlopsPerToken } from "../src/bench/engine.js";
import { GemmaDecoderLayer } from "../src/models/gemma.js";
import { LlamaDecoderLayer, LlamaForCausalLM, ropeTables } from "../src/models/llama.js";
import { PhiDecoderLayer } from "../src/models/phi.js";
import * as F from "../src/nn/functional.js";
import { Linear } from "../src/nn/layers.js";
import { ModuleList } from "../src/nn/module.js";
import { packFrozenWeights, unpackWeights } from "../src/nn/packed.js";
import { backward, checkpoint, gradStats, noGrad } from "../src/nn/tape.js";
import { isNative, K, refK } from "../src/tensor/native.js";
import type { ActKind } from "../src/tensor/ref/kernels.js";
import { Rng } from "../src/tensor/rng.js";
import { Tensor } from "../src/tensor/tensor.js";
import { bitsEqual, expectClose, maxAbs, randF32 } from "./helpers.js";

type F64 = Float64Array;
const R = refK as unknown as {
  [k: string]: (...a: unknown[]) => unknown;
};

function gradcheck(
  inputs: { data: Float32Array; shape: number[]; frozen?: boolean; tensor?: Tensor }[],
  op: (ts: Tensor[]) => Tensor,
  ref: (xs: F64[]) => F64,
  opts: { rtol?: number; atol?: number; samples?: number; h?: number } = {},
): void {
  const ts = inputs.map((i) => {
    if (!i.tensor) return new Tensor(i.data.slice(), i.shape, !i.frozen);
    i.tensor.requiresGrad = !i.frozen;
    i.tensor.grad = null;
    return i.tensor;
  });
  const out = op(ts);
  const seed = randF32(out.size, 1234);
  backward(out, seed);
  const xs = inputs.map((i) => Float64Array.from(i.data));
  const L = () => {
    const y = ref(xs);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * seed[i];
    return s;
  };
  const h = opts.h ?? 1e-6;
  const rng = new Rng(7);
  inputs.forEach((inp, k) => {
    if (inp.frozen) {
      expect(ts[k].grad).toBeNull();
      return;
    }
    const g = ts[k].grad as Float32Array;
    expect(g, `input ${k} has a gradient`).not.toBeNull();
    const n = inp.data.length;
    const idx =
      n <= (opts.samples ?? 48) ? [...Array(n).keys()] : Array.from({ length: opts.samples ?? 48 }, () => rng.int(n));
    const fd = idx.map((j) => {
      const x0 = xs[k][j];
      xs[k][j] = x0 + h;
      const lp = L();
      xs[k][j] = x0 - h;
      const lm = L();
      xs[k][j] = x0;
      return (lp - lm) / (2 * h);
    });
    const an = idx.map((j) => g[j]);
    const tol = (opts.atol ?? 1e-4) + (opts.rtol ?? 2e-3) * maxAbs(fd);
    idx.forEach((j, t) => {
      if (!(Math.abs(an[t] - fd[t]) <= tol))
        throw new Error(`input ${k}[${j}]: analytic ${an[t]} vs finite difference ${fd[t]} (tol ${tol})`);
    });
  });
}

const f64 = (n: number) => new Float64Array(n);

function lin64(x: F64, W: F64, b: F64 | null, M: number, out: number, inp: number): F64 {
  const y = f64(M * out);
  R.gemm(y, x, W, M, out, inp, false, true, 1, 0);
  if (b) R.biasAdd(y, b, M, out);
  return y;
}

describe("op gradients vs float64 finite differences", () => {
  it("linear (with bias, frozen weight variant)", () => {
    const [M, inp, out] = [5, 7, 3];
    const x = { data: randF32(M * inp, 1), shape: [M, inp] };
    const W = { data: randF32(out * inp, 2), shape: [out, inp] };
    const b = { data: randF32(out, 3), shape: [out] };
    gradcheck(
      [x, W, b],
      ([a, w, c]) => F.linear(a, w, c),
      ([a, w, c]) => lin64(a, w, c, M, out, inp),
    );
    gradcheck(
      [x, { ...W, frozen: true }],
      ([a, w]) => F.linear(a, w),
      ([a, w]) => lin64(a, w, null, M, out, inp),
    );
  });

  it("matmul with every transpose", () => {
    for (const [ta, tb] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ]) {
      const [M, Kd, N] = [4, 3, 5];
      const a = { data: randF32(M * Kd, 4), shape: ta ? [Kd, M] : [M, Kd] };
      const b = { data: randF32(Kd * N, 5), shape: tb ? [N, Kd] : [Kd, N] };
      gradcheck(
        [a, b],
        ([x, y]) => F.matmul(x, y, ta, tb),
        ([x, y]) => {
          const c = f64(M * N);
          R.gemm(c, x, y, M, N, Kd, ta, tb, 1, 0);
          return c;
        },
      );
    }
  });

  it("add, mul, scale, maskMul, maskedScaleAdd, reshape", () => {
    const a = { data: randF32(12, 6), shape: [3, 4] };
    const b = { data: randF32(12, 7), shape: [3, 4] };
    const mask = Uint8Array.from({ length: 12 }, (_, i) => i % 3 && 1);
    gradcheck(
      [a, b],
      ([x, y]) => F.add(F.mul(x, y), F.scale(F.reshape(x, [12]), 0.3)),
      ([x, y]) => x.map((v, i) => v * y[i] + 0.3 * v),
    );
    gradcheck(
      [a],
      ([x]) => F.maskMul(x, mask),
      ([x]) => x.map((v, i) => (mask[i] ? v : 0)),
    );
    gradcheck(
      [a, b],
      ([w, d]) => F.maskedScaleAdd(w, d, mask, 0.7),
      ([w, d]) => w.map((v, i) => v + (mask[i] ? 0.7 * d[i] : 0)),
    );
  });

  it("gatherCols (a column list, and a contiguous range as Phi-3 splits its fused projections)", () => {
    const a = { data: randF32(15, 8), shape: [3, 5] };
    for (const cols of [Int32Array.of(4, 0, 2), Int32Array.of(1, 2, 3)])
      gradcheck(
        [a],
        ([x]) => F.gatherCols(x, cols),
        ([x]) => Float64Array.from({ length: 9 }, (_, k) => x[Math.floor(k / 3) * 5 + cols[k % 3]]),
      );
  });

  it("maskedScaleAdd has the bits of add(W, scale(maskMul(D), s)), forward and gradient", () => {
    const mask = Uint8Array.from({ length: 300 }, (_, i) => ((i * 31) % 5 > 1 ? 1 : 0));
    const run = (fused: boolean) => {
      const W = new Tensor(randF32(300, 11), [20, 15]);
      const D = new Tensor(randF32(300, 12), [20, 15]);
      W.requiresGrad = true;
      D.requiresGrad = true;
      const y = fused ? F.maskedScaleAdd(W, D, mask, 2.37) : F.add(W, F.scale(F.maskMul(D, mask), 2.37));
      backward(y, randF32(300, 13));
      return [y.data, W.grad as Float32Array, D.grad as Float32Array].map((a) => Array.from(a));
    };
    expect(run(true)).toEqual(run(false));
  });

  it("rmsnorm and layernorm", () => {
    const [M, C] = [4, 9];
    const x = { data: randF32(M * C, 8), shape: [M, C] };
    const w = { data: randF32(C, 9), shape: [C] };
    const b = { data: randF32(C, 10), shape: [C] };
    gradcheck(
      [x, w],
      ([a, c]) => F.rmsnorm(a, c, 1e-5),
      ([a, c]) => {
        const y = f64(M * C);
        R.rmsnormFwd(y, null, a, c, M, C, 1e-5);
        return y;
      },
    );
    gradcheck(
      [x, w, b],
      ([a, c, d]) => F.layernorm(a, c, d, 1e-5),
      ([a, c, d]) => {
        const y = f64(M * C);
        R.layernormFwd(y, null, null, a, c, d, M, C, 1e-5);
        return y;
      },
    );
  });

  it("rope (rotate-half, interleaved, partial)", () => {
    for (const [interleaved, Rd] of [
      [false, 8],
      [true, 8],
      [false, 4],
    ] as const) {
      const [B, T, H, D] = [2, 3, 2, 8];
      const tab = ropeTables(T, Rd, 10000, interleaved);
      const x = { data: randF32(B * T * H * D, 11), shape: [B, T, H * D] };
      gradcheck(
        [x],
        ([a]) => F.rope(a, B, T, H, D, tab),
        ([a]) => {
          const y = f64(a.length);
          R.rope(y, a, Float64Array.from(tab.cos), Float64Array.from(tab.sin), B, T, H, D, Rd, interleaved, false);
          return y;
        },
      );
    }
  });

  it("causal GQA attention, with and without a sliding window", () => {
    const [B, T, H, KV, D] = [2, 5, 4, 2, 3];
    const q = { data: randF32(B * T * H * D, 12), shape: [B, T, H * D] };
    const k = { data: randF32(B * T * KV * D, 13), shape: [B, T, KV * D] };
    const v = { data: randF32(B * T * KV * D, 14), shape: [B, T, KV * D] };
    for (const win of [0, 2]) {
      const s = 1 / Math.sqrt(D);
      gradcheck(
        [q, k, v],
        ([a, b, c]) => F.attention(a, b, c, B, T, H, KV, D, s, win),
        ([a, b, c]) => {
          const y = f64(a.length);
          R.attentionFwd(y, null, a, b, c, B, T, H, KV, D, s, win);
          return y;
        },
      );
    }
  });

  it("activations and SwiGLU", () => {
    const x = { data: randF32(20, 15, 2), shape: [20] };
    const u = { data: randF32(20, 16), shape: [20] };
    for (const kind of ["relu", "gelu", "gelu_tanh", "silu"] as ActKind[]) {
      gradcheck(
        [x],
        ([a]) => F.act(a, kind),
        ([a]) => {
          const y = f64(a.length);
          R.actFwd(y, a, kind);
          return y;
        },
      );
    }
    gradcheck(
      [x, u],
      ([a, b]) => F.swiglu(a, b),
      ([a, b]) => {
        const y = f64(a.length);
        R.swigluFwd(y, a, b);
        return y;
      },
    );
  });

  it("embedding and cross-entropy", () => {
    const [V, C] = [7, 4];
    const ids = Int32Array.from([1, 3, 1, 6, 0]);
    const table = { data: randF32(V * C, 17), shape: [V, C] };
    gradcheck(
      [table],
      ([t]) => F.embedding(ids, t),
      ([t]) => {
        const y = f64(ids.length * C);
        ids.forEach((id, i) => {
          for (let j = 0; j < C; j++) y[i * C + j] = t[id * C + j];
        });
        return y;
      },
    );
    // padding_idx: lookups of that row pass no gradient to it (PyTorch's nn.Embedding(padding_idx=1), OPT's default)
    gradcheck(
      [table],
      ([t]) => F.embedding(ids, t, 1),
      ([t]) => {
        const y = f64(ids.length * C);
        ids.forEach((id, i) => {
          for (let j = 0; j < C; j++) y[i * C + j] = id === 1 ? table.data[id * C + j] : t[id * C + j];
        });
        return y;
      },
    );
    const M = 6;
    const logits = { data: randF32(M * V, 18, 2), shape: [M, V] };
    const tg = Int32Array.from([0, 6, -100, 3, 3, 2]);
    gradcheck(
      [logits],
      ([l]) => F.crossEntropy(l, tg).loss,
      ([l]) => {
        const rl = f64(M);
        R.xent(rl, null, l, tg, M, V, -100, 1);
        return Float64Array.of(rl.reduce((a, b) => a + b, 0) / 5);
      },
    );
  });
});

// ----------------------------------------------------------------------------------------------- a whole block
interface Block {
  forward(x: Tensor, B: number, T: number, tab: F.RopeTables): Tensor;
  namedParameters(): [string, Tensor][];
}

/**
 * A decoder block's forward against its float64 reference `ref(x, parameters in namedParameters order)`, then the
 * gradients of x and of every parameter against finite differences of that reference.
 */
function checkBlock(layer: Block, tab: F.RopeTables, ref: (x: F64, ps: F64[]) => F64, what: string): void {
  const named = layer.namedParameters();
  const x = randF32(B * T * C, 2);
  const y = noGrad(() => layer.forward(new Tensor(x.slice(), [B, T, C]), B, T, tab));
  const ps = named.map(([, t]) => Float64Array.from(t.data));
  expectClose(y.data, ref(Float64Array.from(x), ps), 1e-5, 1e-5, what);
  gradcheck(
    [{ data: x, shape: [B, T, C] }, ...named.map(([, p]) => ({ data: p.data.slice(), shape: p.shape, tensor: p }))],
    ([xt]) => layer.forward(xt, B, T, tab),
    ([xs, ...rest]) => ref(xs, rest),
    { samples: 24, rtol: 3e-3, atol: 2e-4 },
  );
}
const CFG = {
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 11,
  rms_norm_eps: 1e-5,
};
const [B, T, C, H, KV, D, I] = [2, 5, 16, 4, 2, 4, 24];

function makeLayer(seed: number, modelType = "llama"): LlamaDecoderLayer {
  const layer = new LlamaDecoderLayer({ ...CFG, model_type: modelType, attention_bias: modelType === "qwen3" });
  const rng = new Rng(seed);
  for (const p of layer.parameters())
    if (p.shape.length === 2) rng.fillNormal(p.data, 0.3);
    else rng.fillNormal(p.data, 0.1, 1);
  return layer;
}

/**
 * Independent float64 forward of the LLaMA block, written directly with the reference kernels; with the Qwen2 / Qwen3
 * parts when `p` has them (q, k, v, o biases; q_norm and k_norm over each head).
 */
function block64(x: F64, p: Record<string, F64>, tab: F.RopeTables): F64 {
  const M = B * T;
  const rms = (a: F64, w: F64, width = C) => {
    const y = f64(a.length);
    R.rmsnormFwd(y, null, a, w, a.length / width, width, 1e-5);
    return y;
  };
  const cos = Float64Array.from(tab.cos);
  const sin = Float64Array.from(tab.sin);
  const h = rms(x, p.input_layernorm);
  const split = (a: F64, widths: number[]): F64[] => {
    const N = widths.reduce((x, y) => x + y, 0);
    let at = 0;
    return widths.map((w) => {
      const from = at;
      at += w;
      return Float64Array.from({ length: M * w }, (_, e) => a[Math.floor(e / w) * N + from + (e % w)]);
    });
  };
  let [q, k, v] = p.qkv_proj
    ? split(lin64(h, p.qkv_proj, null, M, (H + 2 * KV) * D, C), [H * D, KV * D, KV * D])
    : [
        lin64(h, p.q_proj, p.q_proj_b ?? null, M, H * D, C),
        lin64(h, p.k_proj, p.k_proj_b ?? null, M, KV * D, C),
        lin64(h, p.v_proj, p.v_proj_b ?? null, M, KV * D, C),
      ];
  if (p.q_norm) {
    q = rms(q, p.q_norm, D);
    k = rms(k, p.k_norm, D);
  }
  const qr = f64(q.length);
  const kr = f64(k.length);
  R.rope(qr, q, cos, sin, B, T, H, D, D, false, false);
  R.rope(kr, k, cos, sin, B, T, KV, D, D, false, false);
  const att = f64(q.length);
  R.attentionFwd(att, null, qr, kr, v, B, T, H, KV, D, 1 / Math.sqrt(D));
  const o = lin64(att, p.o_proj, p.o_proj_b ?? null, M, C, H * D);
  const x1 = x.map((a, i) => a + o[i]);
  const h2 = rms(x1, p.post_attention_layernorm);
  const [g, u] = p.gate_up_proj
    ? split(lin64(h2, p.gate_up_proj, null, M, 2 * I, C), [I, I])
    : [lin64(h2, p.gate_proj, null, M, I, C), lin64(h2, p.up_proj, null, M, I, C)];
  const s = f64(g.length);
  R.swigluFwd(s, g, u);
  const dn = lin64(s, p.down_proj, null, M, C, I);
  return x1.map((a, i) => a + dn[i]);
}

const SHORT: Record<string, string> = {
  "input_layernorm.weight": "input_layernorm",
  "self_attn.q_proj.weight": "q_proj",
  "self_attn.k_proj.weight": "k_proj",
  "self_attn.v_proj.weight": "v_proj",
  "self_attn.o_proj.weight": "o_proj",
  "self_attn.q_proj.bias": "q_proj_b",
  "self_attn.k_proj.bias": "k_proj_b",
  "self_attn.v_proj.bias": "v_proj_b",
  "self_attn.o_proj.bias": "o_proj_b",
  "self_attn.qkv_proj.weight": "qkv_proj",
  "mlp.gate_up_proj.weight": "gate_up_proj",
  "self_attn.q_norm.weight": "q_norm",
  "self_attn.k_norm.weight": "k_norm",
  "post_attention_layernorm.weight": "post_attention_layernorm",
  "mlp.gate_proj.weight": "gate_proj",
  "mlp.up_proj.weight": "up_proj",
  "mlp.down_proj.weight": "down_proj",
};

describe("LLaMA decoder block (RMSNorm, GQA + RoPE, SwiGLU) end to end", () => {
  const tab = ropeTables(T, D, 10000);
  it("forward matches the independent float64 block", () => {
    const layer = makeLayer(1);
    const x = randF32(B * T * C, 2);
    const y = noGrad(() => layer.forward(new Tensor(x.slice(), [B, T, C]), B, T, tab));
    const p: Record<string, F64> = {};
    for (const [n, t] of layer.namedParameters()) p[SHORT[n]] = Float64Array.from(t.data);
    const r = block64(Float64Array.from(x), p, tab);
    expectClose(y.data, r, 1e-5, 1e-5, "block forward");
  });
  for (const ckpt of [false, true]) {
    it(`gradients of x and all 9 parameters match finite differences (checkpoint=${ckpt})`, () => {
      const layer = makeLayer(1);
      const named = layer.namedParameters();
      const x = randF32(B * T * C, 2);
      const inputs = [
        { data: x, shape: [B, T, C] },
        ...named.map(([, p]) => ({ data: p.data.slice(), shape: p.shape, tensor: p })),
      ];
      gradcheck(
        inputs,
        ([xt]) =>
          ckpt
            ? checkpoint((hh) => layer.forward(hh, B, T, tab), xt, layer.parameters())
            : layer.forward(xt, B, T, tab),
        ([xs, ...ps]) => {
          const p: Record<string, F64> = {};
          named.forEach(([n], i) => {
            p[SHORT[n]] = ps[i];
          });
          return block64(xs, p, tab);
        },
        { samples: 24, rtol: 3e-3, atol: 2e-4 },
      );
    });
  }

  // Qwen2: biases on q, k, v (not o); Qwen3 (attention_bias here): biases on q, k, v, o and an RMSNorm of each head of
  // q and k before RoPE; Phi-3: q, k, v in one qkv_proj, gate and up in one gate_up_proj.
  for (const [modelType, nParams] of [
    ["qwen2", 12],
    ["qwen3", 15],
    ["phi3", 6],
  ] as const)
    it(`${modelType}: forward matches the float64 block, and the gradients of x and all ${nParams} parameters match finite differences`, () => {
      const layer = makeLayer(1, modelType);
      const named = layer.namedParameters();
      expect(named.length).toBe(nParams);
      const params = (ps: F64[]) => {
        const p: Record<string, F64> = {};
        named.forEach(([n], i) => {
          p[SHORT[n]] = ps[i];
        });
        return p;
      };
      checkBlock(layer, tab, (xs, ps) => block64(xs, params(ps), tab), `${modelType} block`);
    });

  it("checkpointing gives bit-identical gradients to the plain backward", () => {
    const grads = [false, true].map((ckpt) => {
      const layer = makeLayer(3);
      const x = new Tensor(randF32(B * T * C, 4), [B, T, C], true);
      const out = ckpt
        ? checkpoint((hh) => layer.forward(hh, B, T, tab), x, layer.parameters())
        : layer.forward(x, B, T, tab);
      backward(out, randF32(out.size, 5));
      return [x.grad as Float32Array, ...layer.parameters().map((p) => p.grad as Float32Array)];
    });
    grads[0].forEach((g, i) => {
      expect(Array.from(grads[1][i])).toEqual(Array.from(g));
    });
  });

  it("a frozen-weight backward performs no weight-gradient GEMM (norms + LoRA trainable)", () => {
    const layer = makeLayer(5);
    layer.requiresGrad(false);
    layer.input_layernorm.weight.requiresGrad = true;
    layer.post_attention_layernorm.weight.requiresGrad = true;
    const rng = new Rng(1);
    for (const [, lin] of layer.linears()) lin.addLora(2, 4, rng);
    const x = new Tensor(randF32(B * T * C, 6), [B, T, C]);
    const before = { ...gradStats };
    const out = layer.forward(x, B, T, tab);
    backward(out, randF32(out.size, 7));
    // Only the LoRA factors (A and B of 7 linears) get weight gradients; the 7 frozen base weights get none.
    expect(gradStats.dWGemms - before.dWGemms).toBe(14);
    const frozen = layer.linears().map(([, l]) => l.weight);
    for (const w of frozen) expect(w.grad).toBeNull();
    for (const [, l] of layer.linears()) expect(l.lora?.A.grad).not.toBeNull();
    // Without adapters and with only norms trainable: zero dW GEMMs.
    const plain = makeLayer(5).requiresGrad(false);
    plain.input_layernorm.weight.requiresGrad = true;
    const b2 = gradStats.dWGemms;
    backward(plain.forward(x, B, T, tab), randF32(out.size, 7));
    expect(gradStats.dWGemms - b2).toBe(0);
  });

  it("a whole-model step's GEMMs do the FLOPs the bench counts: full 6N per token, PEFT 4N + the LoRA-rank products", () => {
    const cfg = { ...LLAMA768, hidden_size: 48, intermediate_size: 80, num_hidden_layers: 2, num_attention_heads: 4 };
    Object.assign(cfg, { num_key_value_heads: 2, vocab_size: 96, max_position_embeddings: 32 });
    const T = 24;
    const r = 3;
    const ids = Int32Array.from({ length: T }, (_, i) => (7 * i + 3) % cfg.vocab_size);
    const targets = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
    const gemmFlops = (m: LlamaForCausalLM): number => {
      const k = K as unknown as { gemm: (...a: unknown[]) => void };
      const gemm = k.gemm;
      let flops = 0;
      k.gemm = (...a: unknown[]) => {
        const [M, N, Kd, K2] = [a[3], a[4], a[5], a[16] ?? 0] as number[];
        flops += 2 * M * N * (Kd + K2);
        gemm(...a);
      };
      try {
        backward(F.crossEntropy(m.forward(ids, 1, T), targets).loss);
      } finally {
        k.gemm = gemm;
      }
      return flops;
    };
    const full = new LlamaForCausalLM(cfg).initRandom(0, 0.02).requiresGrad(true);
    const peft = new LlamaForCausalLM(cfg).initRandom(0, 0.02).requiresGrad(false);
    const rng = new Rng(2);
    for (const layer of peft.model.layers.items) {
      for (const [, lin] of layer.linears()) rng.fillNormal(lin.addLora(r, 2 * r, rng).B.data, 0.01);
      layer.input_layernorm.weight.requiresGrad = true;
      layer.post_attention_layernorm.weight.requiresGrad = true;
    }
    peft.model.norm.weight.requiresGrad = true;
    const adapted = peft.model.layers.items.flatMap((layer) => layer.linears().map(([, l]) => l));
    const C = cfg.hidden_size;
    const N = adapted.reduce((a, l) => a + l.inFeatures * l.outFeatures, 0) + C * cfg.vocab_size;
    const want = stepFlopsPerToken(N, cfg.num_hidden_layers, C, T, r, adapted);
    const attention = 6 * T * C * cfg.num_hidden_layers; // not GEMM calls: the attention kernels
    expect(gemmFlops(full)).toBe((want.full - attention) * T);
    expect(gemmFlops(peft)).toBe((want.peft - attention) * T);
    // llama768 with LoRA r = 16 on every block linear: the ceiling the README derives (321.9 / 227.4 GFLOP a step)
    const big = new LlamaForCausalLM({ ...LLAMA768, num_hidden_layers: 1, vocab_size: 8 }); // its block's shapes
    const per = big.model.layers.items[0].linears().map(([, l]) => l);
    const blockN = per.reduce((a, l) => a + l.inFeatures * l.outFeatures, 0);
    const L = LLAMA768.num_hidden_layers;
    const f = stepFlopsPerToken(L * blockN + 768 * 32000, L, 768, 512, 16, Array(L).fill(per).flat());
    expect((f.full * 512) / 1e9).toBeCloseTo(321.9, 1);
    expect((f.peft * 512) / 1e9).toBeCloseTo(227.4, 1);
    expect(f.full / f.peft).toBeCloseTo(1.415, 3);
  });

  it("no-grad forward records nothing and matches the recorded forward", () => {
    const layer = makeLayer(8);
    const x = new Tensor(randF32(B * T * C, 9), [B, T, C], true);
    const a = noGrad(() => layer.forward(x, B, T, tab));
    expect(a.node).toBeNull();
    const b = layer.forward(x, B, T, tab);
    expect(b.node).not.toBeNull();
    expect(Array.from(a.data)).toEqual(Array.from(b.data));
  });
});

describe("Gemma 3 decoder block (sandwich (1 + w) RMSNorms, q_norm / k_norm, GeGLU, windowed GQA) end to end", () => {
  const cfg = { ...CFG, model_type: "gemma3_text", head_dim: D, query_pre_attn_scalar: 7, sliding_window: 3 };
  const tab = ropeTables(T, D, 10000);
  it("forward matches a float64 block, and the gradients of x and all 13 parameters match finite differences", () => {
    const layer = new GemmaDecoderLayer(cfg, 0, D); // block 0: a sliding one
    expect(layer.sliding).toBe(true);
    const rng = new Rng(4);
    for (const p of layer.parameters()) rng.fillNormal(p.data, p.shape.length === 2 ? 0.3 : 0.2);
    const named = layer.namedParameters();
    expect(named.length).toBe(13);
    const M = B * T;
    const ref = (x: F64, ps: F64[]): F64 => {
      const p: Record<string, F64> = {};
      named.forEach(([n], i) => {
        p[n] = ps[i];
      });
      const norm = (a: F64, w: F64, width = C) => {
        const y = f64(a.length);
        R.rmsnormFwd(
          y,
          null,
          a,
          w.map((v) => 1 + v),
          a.length / width,
          width,
          1e-5,
        );
        return y;
      };
      const lin = (a: F64, n: string, out: number, inp: number) => lin64(a, p[`${n}.weight`], null, M, out, inp);
      const h = norm(x, p["input_layernorm.weight"]);
      const q = norm(lin(h, "self_attn.q_proj", H * D, C), p["self_attn.q_norm.weight"], D);
      const k = norm(lin(h, "self_attn.k_proj", KV * D, C), p["self_attn.k_norm.weight"], D);
      const v = lin(h, "self_attn.v_proj", KV * D, C);
      const [qr, kr, att] = [f64(q.length), f64(k.length), f64(q.length)];
      const cos = Float64Array.from(tab.cos);
      const sin = Float64Array.from(tab.sin);
      R.rope(qr, q, cos, sin, B, T, H, D, D, false, false);
      R.rope(kr, k, cos, sin, B, T, KV, D, D, false, false);
      R.attentionFwd(att, null, qr, kr, v, B, T, H, KV, D, 1 / Math.sqrt(7), 3);
      const o = norm(lin(att, "self_attn.o_proj", C, H * D), p["post_attention_layernorm.weight"]);
      const x1 = x.map((a, i) => a + o[i]);
      const h2 = norm(x1, p["pre_feedforward_layernorm.weight"]);
      const g = lin(h2, "mlp.gate_proj", I, C);
      const ga = f64(g.length);
      R.actFwd(ga, g, "gelu_tanh");
      const u = lin(h2, "mlp.up_proj", I, C);
      const m = norm(
        lin(
          ga.map((a, i) => a * u[i]),
          "mlp.down_proj",
          C,
          I,
        ),
        p["post_feedforward_layernorm.weight"],
      );
      return x1.map((a, i) => a + m[i]);
    };
    checkBlock(layer, tab, ref, "gemma3 block");
  });
});

describe("Phi decoder block (one LayerNorm, parallel attention + MLP, biases, q/k LayerNorms, partial rotary)", () => {
  it("forward matches a float64 block, and the gradients of x and all 18 parameters match finite differences", () => {
    const cfg = { ...CFG, model_type: "phi", qk_layernorm: true, hidden_act: "gelu_new" };
    const layer = new PhiDecoderLayer(cfg as never, D);
    const rng = new Rng(6);
    for (const [n, p] of layer.namedParameters())
      rng.fillNormal(p.data, p.shape.length === 2 ? 0.3 : 0.2, n.includes("layernorm.weight") ? 1 : 0);
    const named = layer.namedParameters();
    expect(named.length).toBe(18);
    const tab = ropeTables(T, D / 2, 10000); // half of each head rotated
    const M = B * T;
    const ref = (x: F64, ps: F64[]): F64 => {
      const p: Record<string, F64> = {};
      named.forEach(([n], i) => {
        p[n] = ps[i];
      });
      const ln = (a: F64, n: string, width: number) => {
        const y = f64(a.length);
        R.layernormFwd(y, null, null, a, p[`${n}.weight`], p[`${n}.bias`], a.length / width, width, 1e-5);
        return y;
      };
      const lin = (a: F64, n: string, out: number, inp: number) =>
        lin64(a, p[`${n}.weight`], p[`${n}.bias`], M, out, inp);
      const h = ln(x, "input_layernorm", C);
      const q = ln(lin(h, "self_attn.q_proj", H * D, C), "self_attn.q_layernorm", D);
      const k = ln(lin(h, "self_attn.k_proj", KV * D, C), "self_attn.k_layernorm", D);
      const v = lin(h, "self_attn.v_proj", KV * D, C);
      const [qr, kr, att, g] = [f64(q.length), f64(k.length), f64(q.length), f64(M * I)];
      const cos = Float64Array.from(tab.cos);
      const sin = Float64Array.from(tab.sin);
      R.rope(qr, q, cos, sin, B, T, H, D, D / 2, false, false);
      R.rope(kr, k, cos, sin, B, T, KV, D, D / 2, false, false);
      R.attentionFwd(att, null, qr, kr, v, B, T, H, KV, D, 1 / Math.sqrt(D));
      const o = lin(att, "self_attn.dense", C, H * D);
      R.actFwd(g, lin(h, "mlp.fc1", I, C), "gelu_tanh");
      const m = lin(g, "mlp.fc2", C, I);
      return x.map((a, i) => a + o[i] + m[i]);
    };
    checkBlock(layer, tab, ref, "phi block");
  });
});

describe("headCrossEntropy (the LM head and its loss over chunks of rows)", () => {
  const run = (chunked: boolean, subsets: "peft" | "head", scale = 1) => {
    const m = new LlamaForCausalLM({ ...CFG, num_hidden_layers: 2, vocab_size: 29 }).initRandom(3, 0.3);
    m.requiresGrad(false);
    const rng = new Rng(2);
    for (const l of m.blocks) {
      for (const [, lin] of l.linears()) {
        const a = lin.addLora(2, 4, rng);
        rng.fillNormal(a.B.data, 0.1);
      }
      l.input_layernorm.weight.requiresGrad = true;
    }
    if (subsets === "head") m.untieHead().weight.requiresGrad = true;
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % 29);
    const targets = Int32Array.from({ length: B * T }, (_, i) => (i % T === T - 1 ? -100 : ids[i + 1]));
    const h = m.hidden(ids, B, T);
    const { loss } = chunked
      ? F.headCrossEntropy(h, (x) => m.head(x), targets, 29, 3 * 29) // 3 rows at a time
      : F.crossEntropy(m.head(h), targets);
    backward(scale === 1 ? loss : F.scale(loss, scale));
    const grads = m
      .namedParameters()
      .filter(([, p]) => p.requiresGrad)
      .map(([, p]) => Array.from(p.grad as Float32Array));
    return { loss: loss.data[0], grads };
  };
  it("frozen head: the loss and every gradient have the bits of crossEntropy(head(h))", () => {
    const [a, b] = [run(false, "peft"), run(true, "peft")];
    expect(b.loss).toBe(a.loss);
    expect(b.grads).toEqual(a.grads);
    // a backward seed other than 1 (gradient accumulation): the same up to rounding
    const [c, d] = [run(false, "peft", 0.25), run(true, "peft", 0.25)];
    for (const [i, g] of c.grads.entries())
      expectClose(Float32Array.from(d.grads[i]), Float64Array.from(g), 1e-6, 1e-6, `grad ${i}`);
  });
  it("a trainable head takes the one-pass route; without gradients the loss is chunked", () => {
    const [a, b] = [run(false, "head"), run(true, "head")];
    expect(b.loss).toBe(a.loss);
    expect(b.grads).toEqual(a.grads);
    const m = new LlamaForCausalLM({ ...CFG, vocab_size: 29 }).initRandom(4, 0.3);
    const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 5) % 29);
    const t = Int32Array.from({ length: 12 }, (_, i) => (i === 5 ? -100 : (i * 3) % 29));
    const [w, c] = noGrad(() => {
      const h = m.hidden(ids, 1, 12);
      return [
        F.crossEntropy(m.head(h), t).loss.data[0],
        F.headCrossEntropy(h, (x) => m.head(x), t, 29, 29 * 5).loss.data[0],
      ];
    });
    expect(c).toBe(w);
  });
});

describe("step arena", () => {
  it("recycled (stale) buffers give bit-identical losses and gradients to fresh allocation", async () => {
    const { Arena, withArena, alloc, allocRaw } = await import("../src/tensor/arena.js");
    const tab = ropeTables(T, D, 10000);
    const run = (arena: InstanceType<typeof Arena> | null) => {
      const layer = makeLayer(11);
      const out: Float32Array[] = [];
      for (let rep = 0; rep < 3; rep++) {
        layer.zeroGrad();
        const f = () => {
          const x = new Tensor(randF32(B * T * C, 12 + rep), [B, T, C], true);
          const y = layer.forward(F.scale(x, 1.5), B, T, tab);
          backward(y, randF32(y.size, 13));
        };
        if (arena) withArena(arena, f);
        else f();
        out.push(...layer.parameters().map((p) => (p.grad as Float32Array).slice()));
      }
      return out;
    };
    const a = run(null);
    const b = run(new Arena());
    a.forEach((g, i) => {
      expect(Array.from(b[i])).toEqual(Array.from(g));
    });
    const ar = new Arena();
    const first = withArena(ar, () => {
      const z = alloc(5000);
      z[0] = 7;
      const r = allocRaw(6000);
      r[0] = 9;
      return [z, r];
    });
    withArena(ar, () => {
      const z = alloc(5000);
      expect(z).toBe(first[0]);
      expect(z[0]).toBe(0);
      expect(allocRaw(6000)[0]).toBe(9);
    });
  });
});

describe("lazy gradient zeroing", () => {
  it("an embedding gradient is zeroed only where earlier steps wrote, and any other writer stops the row tracking", () => {
    const [V, C] = [9, 3];
    const table = new Tensor(randF32(V * C, 7), [V, C], true);
    const g = randF32(4 * C, 8);
    const step = (ids: number[]) => backward(F.embedding(Int32Array.from(ids), table), g);
    // the gradient of one step from scratch: row id accumulates the rows of g that read it
    const expected = (ids: number[]) => {
      const e = new Float32Array(V * C);
      ids.forEach((id, i) => {
        for (let j = 0; j < C; j++) e[id * C + j] += g[i * C + j];
      });
      return Array.from(e);
    };
    step([1, 4, 1, 8]);
    expect(Array.from(table.readGrad() as Float32Array)).toEqual(expected([1, 4, 1, 8]));
    table.clearGrad();
    step([0, 2, 2, 5]); // rows 1, 4, 8 of the last step must read 0 now
    expect(Array.from(table.readGrad() as Float32Array)).toEqual(expected([0, 2, 2, 5]));
    const scaled = table.readGrad() as Float32Array; // scaling in place (gradient clipping) keeps the tracking valid
    for (let i = 0; i < scaled.length; i++) scaled[i] *= 0.5;
    table.clearGrad();
    step([3, 3, 3, 3]);
    expect(Array.from(table.readGrad() as Float32Array)).toEqual(expected([3, 3, 3, 3]));
    // a write through .grad (any element) ends the tracking: the next clear zeroes everything
    (table.grad as Float32Array)[7 * C] = 42;
    table.clearGrad();
    step([6, 6, 0, 1]);
    expect(Array.from(table.readGrad() as Float32Array)).toEqual(expected([6, 6, 0, 1]));
    step([6, 6, 0, 1]); // no clear: accumulates
    const twice = Float32Array.from(expected([6, 6, 0, 1]), (v) => 2 * v);
    expectClose(table.readGrad() as Float32Array, twice, 1e-6, 1e-6, "accumulated");
  });

  it("zeroGrad is O(1) yet a backward after it equals a fresh one, accumulation still adds, untouched grads read 0", () => {
    const x = new Tensor(randF32(6 * 5, 1), [6, 5]);
    const W = new Tensor(randF32(4 * 5, 2), [4, 5], true);
    const A = new Tensor(randF32(2 * 5, 3), [2, 5], true);
    const Bm = new Tensor(randF32(4 * 2, 4), [4, 2], true);
    const b = new Tensor(randF32(4, 5), [4], true);
    const unused = new Tensor(randF32(3, 6), [3], true);
    const run = () => backward(F.mse(F.loraLinear(x, W, b, A, Bm, 2), new Float32Array(6 * 4).fill(0.5)));
    run();
    unused.grad = Float32Array.from([1, 2, 3]);
    const first = [W, A, Bm, b].map((t) => (t.grad as Float32Array).slice());
    for (const t of [W, A, Bm, b, unused]) t.clearGrad();
    run();
    const params = [W, A, Bm, b];
    for (let i = 0; i < params.length; i++)
      expect(Array.from(params[i].grad as Float32Array)).toEqual(Array.from(first[i]));
    expect(Array.from(unused.grad as Float32Array)).toEqual([0, 0, 0]);
    run(); // no zeroGrad: gradients accumulate
    for (let i = 0; i < params.length; i++) {
      expectClose(
        params[i].grad as Float32Array,
        first[i].map((v) => 2 * v),
        1e-5,
        1e-6,
        "accumulated",
      );
    }
  });
});

describe("step arena at real sizes", () => {
  it("checkpointed blocks inside an arena: intermediates recycled per block, same bits as a plain backward", async () => {
    const { Arena, withArena } = await import("../src/tensor/arena.js");
    const cfg = { ...CFG, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 };
    const [b, t, c] = [2, 64, 64];
    const tab = ropeTables(t, 16, 10000);
    for (const type of ["full", "mask_lora"] as const) {
      const run = (arena: InstanceType<typeof Arena> | null, ckpt: boolean) => {
        const layers = [0, 1, 2].map(() => new LlamaDecoderLayer(cfg));
        const rng = new Rng(5);
        for (const layer of layers) {
          for (const p of layer.parameters()) rng.fillNormal(p.data, p.shape.length === 2 ? 0.2 : 0.1, 1);
          if (type === "full") continue;
          for (const p of layer.parameters()) p.requiresGrad = false;
          for (const [, lin] of layer.linears()) {
            lin.mask = Uint8Array.from(lin.weight.data, (_, i) => (i % 3 === 0 ? 0 : 1));
            for (let i = 0; i < lin.weight.size; i++) if (!lin.mask[i]) lin.weight.data[i] = 0;
            rng.fillNormal(lin.addLora(8, 16, rng, type).B.data, 0.05);
          }
        }
        const out: Float32Array[] = [];
        for (let rep = 0; rep < 2; rep++) {
          for (const layer of layers) layer.zeroGrad();
          const x = new Tensor(randF32(b * t * c, 30 + rep), [b, t, c], true);
          const f = () => {
            let h = F.scale(x, 1.5);
            for (const layer of layers) {
              const blk = (hh: Tensor) => layer.forward(hh, b, t, tab);
              h = ckpt ? checkpoint(blk, h, layer.parameters()) : blk(h);
            }
            backward(h, randF32(h.size, 31));
          };
          if (arena) withArena(arena, f);
          else f();
          out.push((x.grad as Float32Array).slice());
          for (const layer of layers)
            for (const p of layer.parameters()) if (p.requiresGrad) out.push((p.grad as Float32Array).slice());
        }
        return out;
      };
      const plain = run(null, false);
      const arena = new Arena();
      const recycled = run(arena, true);
      expect(recycled.length).toBe(plain.length);
      for (let i = 0; i < plain.length; i++) expect(bitsEqual(recycled[i], plain[i]), `${type} grad ${i}`).toBe(true);
    }
  });

  it("every LoRA type and full training: recycled buffers give the same bits as fresh ones", async () => {
    const { Arena, withArena } = await import("../src/tensor/arena.js");
    const cfg = { ...CFG, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 };
    const [b, t, c] = [2, 64, 64]; // activations of 8192+ elements: above the arena's 4096 threshold
    const tab = ropeTables(t, 16, 10000);
    for (const type of ["full", "lora", "lora_prune", "mask_lora", "scale_lora"] as const) {
      const run = (arena: InstanceType<typeof Arena> | null) => {
        const layer = new LlamaDecoderLayer(cfg);
        const rng = new Rng(3);
        for (const p of layer.parameters()) rng.fillNormal(p.data, p.shape.length === 2 ? 0.2 : 0.1, 1);
        if (type !== "full") {
          for (const p of layer.parameters()) p.requiresGrad = false;
          for (const [, lin] of layer.linears()) {
            lin.mask = Uint8Array.from(lin.weight.data, (_, i) => (i % 3 === 0 ? 0 : 1));
            for (let i = 0; i < lin.weight.size; i++) if (!lin.mask[i]) lin.weight.data[i] = 0;
            const l = lin.addLora(8, 16, rng, type);
            if (type !== "scale_lora") rng.fillNormal(l.B.data, 0.05);
          }
        }
        const out: Float32Array[] = [];
        for (let rep = 0; rep < 3; rep++) {
          layer.zeroGrad();
          const f = () => {
            const x = new Tensor(randF32(b * t * c, 20 + rep), [b, t, c], true);
            const y = layer.forward(F.scale(x, 1.5), b, t, tab);
            backward(y, randF32(y.size, 21));
          };
          if (arena) withArena(arena, f);
          else f();
          for (const p of layer.parameters()) if (p.requiresGrad) out.push((p.grad as Float32Array).slice());
        }
        return out;
      };
      const fresh = run(null);
      const recycled = run(new Arena());
      expect(fresh.length).toBe(3 * (type === "full" ? 9 : 14)); // 7 weights + 2 norms, or 7 x (A, B)
      expect(recycled.length).toBe(fresh.length);
      for (let i = 0; i < fresh.length; i++) expect(bitsEqual(recycled[i], fresh[i]), `${type} grad ${i}`).toBe(true);
    }
  });
});

describe("frozen weights packed ahead (nn/packed.ts)", () => {
  it("linear and LoRA linear, both weight layouts: the same outputs and gradients, bit for bit", () => {
    const [M, inp, out, r] = [33, 40, 70, 4];
    for (const inOut of [false, true]) {
      for (const withLora of [false, true]) {
        const run = (pack: boolean) => {
          const lin = new Linear(inp, out, { weight: randF32(inp * out, 3), inOut, bias: true });
          lin.weight.requiresGrad = false;
          if (withLora) {
            const l = lin.addLora(r, 8, new Rng(4), "lora");
            l.B.data.set(randF32(out * r, 5));
          }
          const m = new ModuleList([lin]);
          const used0 = K.gemmBlocking().packedGemms;
          const rep = packFrozenWeights(m, pack ? "on" : "off");
          expect(rep.weights).toBe(pack && isNative ? 1 : 0);
          const x = new Tensor(randF32(M * inp, 6), [M, inp], true);
          const y = lin.forward(x);
          backward(F.mse(y, randF32(M * out, 7)));
          const used = K.gemmBlocking().packedGemms - used0;
          unpackWeights(m);
          const grads = withLora ? [lin.lora?.A.grad, lin.lora?.B.grad] : [lin.bias?.grad];
          return { y: y.data.slice(), gx: (x.grad as Float32Array).slice(), grads, used };
        };
        const [p, q] = [run(true), run(false)];
        const what = `inOut ${inOut}, LoRA ${withLora}`;
        if (isNative) expect(p.used, `${what}: pre-packed path taken (forward and dX)`).toBe(2);
        expect(q.used).toBe(0);
        expect(bitsEqual(p.y, q.y), `${what}: y`).toBe(true);
        expect(bitsEqual(p.gx, q.gx), `${what}: dX`).toBe(true);
        for (const [i, g] of p.grads.entries())
          expect(bitsEqual(g as Float32Array, q.grads[i] as Float32Array), `${what}: grad ${i}`).toBe(true);
      }
    }
  });
});
