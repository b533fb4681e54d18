// AdamW (decoupled weight decay, bias correction; PyTorch torch.optim.AdamW semantics) over named parameters.
import { newF32 } from "../tensor/arena.js";
import { K } from "../tensor/native.js";
import type { Tensor } from "../tensor/tensor.js";

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  readonly state: Map<string, { m: Float32Array; v: Float32Array }> = new Map();
  step = 0;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  lr: number;

  constructor(
    readonly params: [string, Tensor][],
    opts: AdamWOptions,
  ) {
    if (!(opts.lr > 0)) throw new RangeError(`AdamW: lr must be > 0 (got ${opts.lr})`);
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    for (const [name, p] of params) this.state.set(name, { m: newF32(p.size), v: newF32(p.size) });
  }

  /** One update with the current .grad of every parameter (a parameter without .grad is skipped). */
  update(lr = this.lr): void {
    this.step++;
    // Check every gradient first, so a bad step leaves all parameters untouched.
    for (const [name, p] of this.params) {
      const g = p.readGrad();
      if (!g) continue;
      for (let i = 0; i < g.length; i++)
        if (!Number.isFinite(g[i])) {
          this.step--;
          throw new Error(`AdamW: non-finite gradient in parameter '${name}' (index ${i}, value ${g[i]})`);
        }
    }
    for (const [name, p] of this.params) {
      const g = p.readGrad();
      if (!g) continue;
      const s = this.state.get(name) as { m: Float32Array; v: Float32Array };
      K.adamw(p.data, g, s.m, s.v, lr, this.beta1, this.beta2, this.eps, this.weightDecay, this.step);
    }
  }

  /** Zeroes the gradients (buffers are kept across steps; O(1) each, see Tensor.clearGrad). */
  zeroGrad(): void {
    for (const [, p] of this.params) p.clearGrad();
  }
}
