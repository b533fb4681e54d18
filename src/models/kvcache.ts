// Keys and values of the positions a model has already seen, per block, so that generation runs each new token
// through the model once instead of re-running the whole context (transformers' DynamicCache, for batch 1).
import { isGradEnabled } from "../nn/tape.js";
import { K } from "../tensor/native.js";
import { Tensor } from "../tensor/tensor.js";

/** One block's view of a cache: its attention over the cached positions and this call's. */
export interface BlockKV {
  /**
   * Appends this call's k, v (T rows of KV·D, RoPE already applied) after the cached positions and attends with q
   * (T rows of H·D, at the positions after the cached ones): (T, H·D), causal, `window` as in F.attention.
   */
  attend(q: Tensor, k: Tensor, v: Tensor, H: number, KV: number, D: number, scale: number, window?: number): Tensor;
}

export class KVCache {
  /** Positions cached (committed by the model after every block has seen them). */
  length = 0;
  private readonly k: Float32Array[] = [];
  private readonly v: Float32Array[] = [];

  /** `capacity`: the most positions the cache will hold (the prompt plus the tokens to generate, at most the context). */
  constructor(
    readonly blocks: number,
    readonly capacity: number,
  ) {
    if (!(Number.isInteger(blocks) && blocks > 0 && Number.isInteger(capacity) && capacity > 0))
      throw new RangeError(`KVCache: blocks (${blocks}) and capacity (${capacity}) must be positive integers`);
  }

  /** Whether T more positions fit. */
  fits(T: number): boolean {
    return this.length + T <= this.capacity;
  }

  /** Block i's view, for a forward of T positions with batch B (only 1 is supported). */
  block(i: number, B: number, T: number): BlockKV {
    if (!(Number.isInteger(i) && i >= 0 && i < this.blocks))
      throw new RangeError(`KVCache: block ${i} of a cache for ${this.blocks} blocks`);
    if (B !== 1) throw new RangeError(`KVCache: batch ${B} (only batch 1 is supported)`);
    if (!this.fits(T))
      throw new RangeError(`KVCache: ${this.length} cached + ${T} new positions exceed its capacity ${this.capacity}`);
    if (isGradEnabled()) throw new Error("KVCache: inference only (run the forward under noGrad)");
    return {
      attend: (q, k, v, H, KVh, D, scale, window = 0) => {
        const w = KVh * D;
        if (!this.k[i]) {
          this.k[i] = new Float32Array(this.capacity * w);
          this.v[i] = new Float32Array(this.capacity * w);
        } else if (this.k[i].length !== this.capacity * w) {
          throw new RangeError(
            `KVCache: block ${i} was filled with rows of ${this.k[i].length / this.capacity}, now ${w}`,
          );
        }
        if (k.size !== T * w || v.size !== T * w || q.size !== T * H * D)
          throw new RangeError(
            `KVCache: block ${i} got q/k/v of ${q.size}/${k.size}/${v.size} floats for ${T} positions`,
          );
        const past = this.length;
        const S = past + T;
        this.k[i].set(k.data, past * w);
        this.v[i].set(v.data, past * w);
        const y = Tensor.alloc(q.shape);
        K.attentionFwd(
          y.data,
          null,
          q.data,
          this.k[i].subarray(0, S * w),
          this.v[i].subarray(0, S * w),
          1,
          T,
          H,
          KVh,
          D,
          scale,
          window,
          past,
        );
        return y;
      },
    };
  }

  /** After a forward: its T positions join the cache. */
  commit(T: number): void {
    if (!this.fits(T))
      throw new RangeError(`KVCache: cannot commit ${T} positions past ${this.length}/${this.capacity}`);
    this.length += T;
  }

  /** Forget every position (the buffers are kept). */
  reset(): void {
    this.length = 0;
  }
}
