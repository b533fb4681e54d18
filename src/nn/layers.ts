// Layers: Linear (optional sparsity mask and LoRA adapter slot), RMSNorm, LayerNorm, Embedding.
import { newF32 } from "../tensor/arena.js";
import { K } from "../tensor/native.js";
import type { Rng } from "../tensor/rng.js";
import { Tensor } from "../tensor/tensor.js";
import * as F from "./functional.js";
import { Module, parameter } from "./module.js";
import { noGrad } from "./tape.js";

/**
 * LoRA variants (PERP): `lora` W + s·BA (merge densifies), `lora_prune` trains W + s·BA and merges W + s·(BA ⊙ M),
 * `mask_lora` trains and merges W + s·(BA ⊙ M) (exact sparsity throughout), `scale_lora` W ⊙ (BA) with A = B = 1/√r
 * so that BA starts at all-ones (exact sparsity). s = α/r.
 */
export type LoraType = "lora" | "lora_prune" | "mask_lora" | "scale_lora";
export const LORA_TYPES: LoraType[] = ["lora", "lora_prune", "mask_lora", "scale_lora"];

export interface LoraAdapter {
  type: LoraType;
  /** (r, in), Kaiming-uniform init (1/√r for scale_lora). */
  A: Tensor;
  /** (out, r), zeros (1/√r for scale_lora). */
  B: Tensor;
  scale: number;
  r: number;
}

export class Linear extends Module {
  readonly weight: Tensor;
  bias: Tensor | null;
  /** 1 = kept, 0 = pruned, in the weight's storage layout; the weight holds exact zeros where the mask is 0. */
  mask: Uint8Array | null = null;
  lora: LoraAdapter | null = null;
  /** HF Conv1D layout (GPT-2): the weight is stored (in, out). */
  readonly inOut: boolean;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean; weight?: Float32Array; biasData?: Float32Array; inOut?: boolean } = {},
  ) {
    super();
    this.inOut = !!opts.inOut;
    this.weight = this.registerParam(
      "weight",
      parameter(
        opts.weight ?? newF32(inFeatures * outFeatures),
        this.inOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures],
        "weight",
      ),
    );
    this.bias =
      opts.bias || opts.biasData
        ? this.registerParam("bias", parameter(opts.biasData ?? new Float32Array(outFeatures), [outFeatures], "bias"))
        : null;
  }

  /** Adds a zero bias (PERP's `bias` subset on families without biases). */
  ensureBias(): Tensor {
    if (!this.bias)
      this.bias = this.registerParam("bias", parameter(new Float32Array(this.outFeatures), [this.outFeatures], "bias"));
    return this.bias;
  }

  /** Attach a LoRA adapter of the given type (A Kaiming-uniform with a = √5 as nn.Linear/PEFT, B = 0). */
  addLora(r: number, alpha: number, rng: Rng, type: LoraType = "lora"): LoraAdapter {
    if (!(Number.isInteger(r) && r >= 1 && r <= Math.min(this.inFeatures, this.outFeatures)))
      throw new RangeError(
        `LoRA rank ${r} must be an integer in [1, ${Math.min(this.inFeatures, this.outFeatures)}] for a ${this.outFeatures}x${this.inFeatures} layer`,
      );
    let A: Tensor;
    let B: Tensor;
    if (type === "scale_lora") {
      const v = 1 / Math.sqrt(r);
      A = parameter(newF32(r * this.inFeatures).fill(v), [r, this.inFeatures]);
      B = parameter(newF32(this.outFeatures * r).fill(v), [this.outFeatures, r]);
    } else {
      const bound = 1 / Math.sqrt(this.inFeatures); // kaiming_uniform_(a=√5): gain·√(3/fan_in) = 1/√fan_in
      A = parameter(rng.fillUniform(newF32(r * this.inFeatures), -bound, bound) as Float32Array, [r, this.inFeatures]);
      B = parameter(newF32(this.outFeatures * r), [this.outFeatures, r]);
    }
    this.lora = { type, A, B, scale: alpha / r, r };
    this.registerParam("lora_A", A);
    this.registerParam("lora_B", B);
    return this.lora;
  }

  /** B·A in the weight's storage layout: (out, in), or (in, out) for Conv1D. */
  private deltaBA(): Tensor {
    const { A, B } = this.lora as LoraAdapter;
    return this.inOut ? F.matmul(A, B, true, true) : F.matmul(B, A);
  }

  /** The weight the layer computes with (for mask_lora / scale_lora a function of the adapters). */
  effectiveWeight(): Tensor {
    const l = this.lora;
    if (!l || l.type === "lora" || l.type === "lora_prune") return this.weight;
    const ba = this.deltaBA();
    if (l.type === "scale_lora") return F.mul(this.weight, ba);
    return this.mask ? F.maskedScaleAdd(this.weight, ba, this.mask, l.scale) : F.add(this.weight, F.scale(ba, l.scale));
  }

  /** Calibration hook: sees every input of this layer (pruning statistics). */
  inputHook: ((x: Tensor) => void) | null = null;

  forward(x: Tensor): Tensor {
    this.inputHook?.(x);
    const l = this.lora;
    if (l && (l.type === "mask_lora" || l.type === "scale_lora"))
      return F.linear(x, this.effectiveWeight(), this.bias, this.inOut);
    if (!l) return F.linear(x, this.weight, this.bias, this.inOut);
    return F.loraLinear(x, this.weight, this.bias, l.A, l.B, l.scale, this.inOut);
  }

  /**
   * Folds the adapter into the weight and removes it. lora: W + s·BA (dense); lora_prune / mask_lora:
   * W + s·(BA ⊙ M); scale_lora: W ⊙ BA. Pruned positions stay exactly 0.0 for every type but plain lora.
   */
  mergeLora(): void {
    const l = this.lora;
    if (!l) return;
    const ba = noGrad(() => this.deltaBA().data);
    this.weight.packed = null; // the weight changes below
    const w = this.weight.data;
    const m = this.mask;
    // The effective weight's own float32 kernels, so a merged mask_lora / scale_lora layer computes exactly what was
    // trained (bit for bit).
    if (l.type === "scale_lora") K.ew(F.EW_MUL, w, w, ba, 0);
    else if (l.type === "lora" || !m) K.ew(F.EW_AXPY, w, ba, null, l.scale);
    else K.maskedScaleAdd(w, w, ba, m, l.scale);
    if (l.type !== "lora") this.applyMask();
    this.lora = null;
    this.unregisterParam("lora_A");
    this.unregisterParam("lora_B");
  }

  /** Re-impose the mask on the weight (after an optimizer step of full retraining). */
  applyMask(): void {
    this.weight.packed = null;
    if (this.mask) K.maskApply(this.weight.data, this.mask);
  }
}

export class RMSNorm extends Module {
  readonly weight: Tensor;
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
    weight?: Float32Array,
  ) {
    super();
    this.weight = this.registerParam("weight", parameter(weight ?? new Float32Array(dim).fill(1), [dim], "weight"));
  }
  forward(x: Tensor): Tensor {
    return F.rmsnorm(x, this.weight, this.eps);
  }
}

export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  /** `affine` false: no weight or bias parameters (PyTorch's elementwise_affine=False); it normalises only. */
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
    readonly affine = true,
  ) {
    super();
    const ones = new Float32Array(dim).fill(1);
    this.weight = affine
      ? this.registerParam("weight", parameter(ones, [dim], "weight"))
      : new Tensor(ones, [dim], false);
    this.bias = affine
      ? this.registerParam("bias", parameter(new Float32Array(dim), [dim], "bias"))
      : new Tensor(new Float32Array(dim), [dim], false);
  }
  forward(x: Tensor): Tensor {
    return F.layernorm(x, this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  readonly weight: Tensor;
  /** The row that gets no gradient from lookups (PyTorch's padding_idx; -1: none). */
  readonly paddingIdx: number;
  constructor(
    readonly num: number,
    readonly dim: number,
    weight?: Float32Array,
    paddingIdx?: number | null,
  ) {
    super();
    this.weight = this.registerParam("weight", parameter(weight ?? newF32(num * dim), [num, dim], "weight"));
    this.paddingIdx = typeof paddingIdx === "number" && paddingIdx >= 0 && paddingIdx < num ? paddingIdx : -1;
  }
  forward(ids: Int32Array): Tensor {
    return F.embedding(ids, this.weight, this.paddingIdx);
  }
}
