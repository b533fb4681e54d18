// Keys and values of the positions a model has already seen, per block: KVCache lets generation run each new token
// through the model once instead of re-running the whole context (transformers' DynamicCache, for batch 1); RowsKV
// gives every row of a batch a cached prefix of its own (zero-shot scoring runs a context once for all its choices).
import { isGradEnabled } from "../nn/tape.js";
import { activeArena } from "../tensor/arena.js";
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

/** What a model's forward needs from a cache (`ForwardOpts.cache`). */
export interface ForwardCache {
  /** Position of each row's first new token: one number for every row, or one per row. */
  readonly offsets: number | Int32Array;
  /** Block i's view, for a forward of B rows of T new positions. */
  block(i: number, B: number, T: number): BlockKV;
  /** After a forward: its T positions join the cache. */
  commit(T: number): void;
}

function checkInference(what: string): void {
  if (isGradEnabled()) throw new Error(`${what}: inference only (run the forward under noGrad)`);
}

function checkQKV(what: string, i: number, q: Tensor, k: Tensor, v: Tensor, rows: number, qw: number, w: number): void {
  if (k.size !== rows * w || v.size !== rows * w || q.size !== rows * qw)
    throw new RangeError(`${what}: block ${i} got q/k/v of ${q.size}/${k.size}/${v.size} floats for ${rows} positions`);
}

export class KVCache implements ForwardCache {
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

  get offsets(): number {
    return this.length;
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
    checkInference("KVCache");
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
        checkQKV("KVCache", i, q, k, v, T, H * D, w);
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

/**
 * A batch whose row b continues after a cached prefix of its own, `offsets[b]` positions long (0: no prefix). Each
 * block's prefix keys and values come from `prefix(block, row)` (at least `offsets[b]` rows of KV·D floats each,
 * RoPE applied, as `rowKV` hands them out; nothing is copied), and each block keeps the keys and values this forward
 * computed, which `rowKV` hands out afterwards as another batch's prefixes. Attention runs over each row's own keys
 * (`attentionFwdRows`), bit for bit the rows of one causal pass over prefix + new tokens. Rows padded on the right are
 * exact: causal queries never see later keys.
 */
export class RowsKV implements ForwardCache {
  /** Per block: the keys and values this forward computed, (B, T, KV·D). */
  private readonly k: Float32Array[] = [];
  private readonly v: Float32Array[] = [];
  private width = 0;
  private T = -1;

  constructor(
    readonly blocks: number,
    readonly offsets: Int32Array,
    private readonly prefix?: (block: number, row: number) => { k: Float32Array; v: Float32Array },
  ) {
    if (!(Number.isInteger(blocks) && blocks > 0)) throw new RangeError(`RowsKV: blocks (${blocks}) must be positive`);
    if (offsets.some((o) => o < 0)) throw new RangeError("RowsKV: negative prefix length");
    if (!prefix && offsets.some((o) => o > 0)) throw new RangeError("RowsKV: prefix lengths without a prefix source");
  }

  block(i: number, B: number, T: number): BlockKV {
    if (!(Number.isInteger(i) && i >= 0 && i < this.blocks))
      throw new RangeError(`RowsKV: block ${i} of a cache for ${this.blocks} blocks`);
    if (B !== this.offsets.length)
      throw new RangeError(`RowsKV: batch ${B} for a cache of ${this.offsets.length} rows`);
    if (this.T >= 0 && T !== this.T) throw new RangeError(`RowsKV: ${T} new positions, the cache holds ${this.T}`);
    if (this.k[i]) throw new RangeError(`RowsKV: block ${i} already ran (one forward per cache)`);
    checkInference("RowsKV");
    return {
      attend: (q, k, v, H, KVh, D, scale, window = 0) => {
        const w = KVh * D;
        checkQKV("RowsKV", i, q, k, v, B * T, H * D, w);
        if (this.width && w !== this.width)
          throw new RangeError(`RowsKV: block ${i} has rows of ${w} floats, block 0 had ${this.width}`);
        this.width = w;
        const y = Tensor.alloc(q.shape);
        if (this.offsets.every((o) => o === 0)) {
          K.attentionFwd(y.data, null, q.data, k.data, v.data, B, T, H, KVh, D, scale, window, 0);
        } else {
          const pk: Float32Array[] = [];
          const pv: Float32Array[] = [];
          const none = new Float32Array(0);
          for (let b = 0; b < B; b++) {
            const p =
              this.offsets[b] > 0 ? (this.prefix as NonNullable<typeof this.prefix>)(i, b) : { k: none, v: none };
            if (p.k.length < this.offsets[b] * w || p.v.length < this.offsets[b] * w)
              throw new RangeError(
                `RowsKV: block ${i} row ${b}: a prefix of ${p.k.length / w} positions, ${this.offsets[b]} needed`,
              );
            pk.push(p.k);
            pv.push(p.v);
          }
          K.attentionFwdRows(y.data, q.data, k.data, v.data, pk, pv, this.offsets, B, T, H, KVh, D, scale, window);
        }
        // Kept for the rows that can be prefixes (those without one of their own); an arena would hand these buffers
        // out again after its scope, so then as copies.
        if (this.offsets.some((o) => o === 0)) {
          this.k[i] = activeArena() ? k.data.slice() : k.data;
          this.v[i] = activeArena() ? v.data.slice() : v.data;
        } else {
          this.k[i] = this.v[i] = new Float32Array(0);
        }
        return y;
      },
    };
  }

  commit(T: number): void {
    this.T = T;
  }

  /** The keys and values row b computed in block i (T positions), as a prefix for a later batch's rows. */
  rowKV(i: number, b: number): { k: Float32Array; v: Float32Array } {
    const k = this.k[i];
    const v = this.v[i];
    if (!k || !v || this.T < 0 || !(b >= 0 && b < this.offsets.length))
      throw new RangeError(`RowsKV: block ${i} row ${b} has not run`);
    if (this.offsets[b] > 0) throw new RangeError(`RowsKV: row ${b} has a prefix of its own, so it cannot be one`);
    const n = this.T * this.width;
    return { k: k.subarray(b * n, (b + 1) * n), v: v.subarray(b * n, (b + 1) * n) };
  }
}
