// Tensor: a Float32Array plus a shape (row-major). Frozen weights may keep bf16/f16 storage (`half`), widened by the
// GEMM while packing. Autograd state (requiresGrad, grad, the creating tape node) lives here; the tape is in nn/tape.ts.
import { allocRaw, newF32 } from "./arena.js";

export type Half = { dtype: "bf16" | "f16"; bits: Uint16Array };

/**
 * A frozen linear weight packed ahead of time for the GEMM (nn/packed.ts): `fwd` for y = x Wᵀ, `bwd` for dX = dY W,
 * each with `k2` spare rows for a LoRA term of that rank (0: none). Valid only while the weight is frozen and unchanged.
 */
export type PackedWeight = { fwd: Float32Array; bwd: Float32Array; k2: number };

export interface GradNode {
  /** Receives d(loss)/d(output) and routes gradients to the inputs. */
  backward(gOut: Float32Array): void;
  inputs: Tensor[];
}

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  data: Float32Array;
  readonly shape: number[];
  requiresGrad: boolean;
  private gradBuf: Float32Array | null = null;
  /** The buffer holds last step's values that count as zeros (see clearGrad): zeroed lazily, or overwritten. */
  private gradStale = false;
  /**
   * For a gradient written only by whole-row scatter-adds (an embedding table, see gradForRows): which rows may be
   * non-zero, so that zeroing it touches those rows only (512 of 32000 for a 512-token step) instead of all of it.
   * null: not tracked (any row may be non-zero).
   */
  private gradRows: Uint8Array | null = null;
  /** The tape node that produced this tensor; null for leaves. */
  node: GradNode | null = null;
  /** Optional bf16/f16 storage of a frozen weight (then `data` may be empty until widened). */
  half: Half | null = null;
  /** GEMM-ready copies of a frozen weight (see PackedWeight); cleared whenever the weight may change. */
  packed: PackedWeight | null = null;
  name = "";

  constructor(data: Float32Array, shape: number[], requiresGrad = false) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new RangeError(`Tensor: data length ${data.length} does not match shape [${shape}]`);
    this.data = data;
    this.shape = shape;
    this.requiresGrad = requiresGrad;
  }

  static zeros(shape: number[], requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, requiresGrad);
  }

  /** An op's output buffer from the active step arena; contents undefined (the op overwrites every element). */
  static alloc(shape: number[]): Tensor {
    return new Tensor(allocRaw(shape.reduce((a, b) => a * b, 1)), shape);
  }

  static from(values: ArrayLike<number>, shape?: number[]): Tensor {
    return new Tensor(Float32Array.from(values), shape ?? [values.length]);
  }

  get size(): number {
    return this.data.length;
  }

  /** Leaf = not produced by a recorded op; a leaf with requiresGrad accumulates into `.grad`. */
  get isLeaf(): boolean {
    return this.node === null;
  }

  /** Same storage, new shape. */
  view(shape: number[]): Tensor {
    if (this.node) throw new Error("view(): reshape a recorded tensor with reshape() from nn/functional");
    return new Tensor(this.data, shape, this.requiresGrad);
  }

  /** Accumulated gradient of a leaf tensor (parameter); null until a backward pass writes one. */
  get grad(): Float32Array | null {
    this.zeroStale();
    this.gradRows = null; // the caller may write any element
    return this.gradBuf;
  }

  set grad(g: Float32Array | null) {
    this.gradBuf = g;
    this.gradStale = false;
    this.gradRows = null;
  }

  /**
   * The gradient for code that only reads it or scales it in place (an optimizer step, gradient clipping): like
   * `grad`, but a row-tracked gradient stays tracked (scaling keeps zero rows zero).
   */
  readGrad(): Float32Array | null {
    this.zeroStale();
    return this.gradBuf;
  }

  /**
   * The gradient buffer for scatter-adding into whole rows (row r: elements [r·C, (r+1)·C)) of `rows`, which are
   * marked as possibly non-zero. Cleared lazily like any gradient, but only the marked rows are zeroed.
   */
  gradForRows(rows: Int32Array, C: number): Float32Array {
    const nRows = Math.floor(this.size / C);
    if (!this.gradBuf) {
      this.gradBuf = newF32(this.size);
      this.gradRows = new Uint8Array(nRows);
    } else if (this.gradStale) {
      this.zeroStale();
      if (!this.gradRows) this.gradRows = new Uint8Array(nRows); // all zero now: tracking can start
    }
    const marks = this.gradRows;
    if (marks) for (let i = 0; i < rows.length; i++) marks[rows[i]] = 1;
    return this.gradBuf;
  }

  private zeroStale(): void {
    const buf = this.gradBuf;
    if (!this.gradStale || !buf) return;
    const marks = this.gradRows;
    if (marks && marks.length > 0) {
      const C = buf.length / marks.length;
      for (let r = 0; r < marks.length; r++)
        if (marks[r]) {
          buf.fill(0, r * C, (r + 1) * C);
          marks[r] = 0;
        }
    } else {
      buf.fill(0);
    }
    this.gradStale = false;
  }

  /** Drops the gradient buffer. */
  zeroGrad(): void {
    this.grad = null;
  }

  /**
   * Zeroes the gradient in O(1): the buffer is kept and marked stale. The next backward pass overwrites it where it
   * can (a weight-gradient GEMM with beta 0, a copy) instead of accumulating, and any other reader sees zeros
   * (filled on first access). Saves a memset of every gradient per step (500 MB for a 124M-parameter model).
   */
  clearGrad(): void {
    if (this.gradBuf) this.gradStale = true;
  }

  /**
   * For kernels that write the whole gradient: the buffer (allocated on first use) and the beta to use, 0 when its
   * contents do not count (fresh or stale), 1 to accumulate. The caller must write every element.
   */
  gradSlot(): { buf: Float32Array; beta: 0 | 1 } {
    this.gradRows = null; // written densely
    if (!this.gradBuf) {
      this.gradBuf = newF32(this.size);
      return { buf: this.gradBuf, beta: 0 };
    }
    const beta = this.gradStale ? 0 : 1;
    this.gradStale = false;
    return { buf: this.gradBuf, beta };
  }

  toString(): string {
    return `Tensor(${this.name || this.id}, [${this.shape}])`;
  }
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function assertShape(op: string, t: Tensor, shape: number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
    throw new RangeError(`${op}: ${t.name || "tensor"} has shape [${t.shape}], expected [${shape}]`);
}
