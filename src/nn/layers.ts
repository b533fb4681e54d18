// Layers: Linear (optional sparsity mask and LoRA adapter slot), RMSNorm, LayerNorm, Embedding.
import { K } from "../tensor/native.js";
import type { Rng } from "../tensor/rng.js";
import type { Tensor } from "../tensor/tensor.js";
import * as F from "./functional.js";
import { Module, parameter } from "./module.js";

export interface LoraAdapter {
  /** (r, in), Kaiming-uniform init. */
  A: Tensor;
  /** (out, r), zeros. */
  B: Tensor;
  scale: number;
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  /** 1 = kept, 0 = pruned; the weight holds exact zeros where the mask is 0. */
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
        opts.weight ?? new Float32Array(inFeatures * outFeatures),
        this.inOut ? [inFeatures, outFeatures] : [outFeatures, inFeatures],
        "weight",
      ),
    );
    this.bias =
      opts.bias || opts.biasData
        ? this.registerParam("bias", parameter(opts.biasData ?? new Float32Array(outFeatures), [outFeatures], "bias"))
        : null;
  }

  /** Attach a LoRA adapter W + (α/r)·B·A with A Kaiming-uniform (a = √5, as nn.Linear/PEFT) and B = 0. */
  addLora(r: number, alpha: number, rng: Rng): LoraAdapter {
    if (!(r >= 1 && r <= Math.min(this.inFeatures, this.outFeatures)))
      throw new RangeError(`LoRA rank ${r} must be in [1, ${Math.min(this.inFeatures, this.outFeatures)}]`);
    const bound = 1 / Math.sqrt(this.inFeatures); // kaiming_uniform_(a=√5): gain·√(3/fan_in) = 1/√fan_in
    const A = parameter(rng.fillUniform(new Float32Array(r * this.inFeatures), -bound, bound) as Float32Array, [
      r,
      this.inFeatures,
    ]);
    const B = parameter(new Float32Array(this.outFeatures * r), [this.outFeatures, r]);
    this.lora = { A, B, scale: alpha / r };
    this.registerParam("lora_A", A);
    this.registerParam("lora_B", B);
    return this.lora;
  }

  /** Calibration hook: sees every input of this layer (pruning statistics). */
  inputHook: ((x: Tensor) => void) | null = null;

  forward(x: Tensor): Tensor {
    this.inputHook?.(x);
    const y = F.linear(x, this.weight, this.bias, this.inOut);
    if (!this.lora) return y;
    const { A, B, scale } = this.lora;
    const low = F.linear(F.linear(x, A), B);
    return F.add(y, scale === 1 ? low : F.scale(low, scale));
  }

  /** Re-impose the mask on the weight (after an optimizer step of full retraining). */
  applyMask(): void {
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
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = this.registerParam("weight", parameter(new Float32Array(dim).fill(1), [dim], "weight"));
    this.bias = this.registerParam("bias", parameter(new Float32Array(dim), [dim], "bias"));
  }
  forward(x: Tensor): Tensor {
    return F.layernorm(x, this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  readonly weight: Tensor;
  constructor(
    readonly num: number,
    readonly dim: number,
    weight?: Float32Array,
  ) {
    super();
    this.weight = this.registerParam("weight", parameter(weight ?? new Float32Array(num * dim), [num, dim], "weight"));
  }
  forward(ids: Int32Array): Tensor {
    return F.embedding(ids, this.weight);
  }
}
