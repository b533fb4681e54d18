// Tensor: a Float32Array plus a shape (row-major). Frozen weights may keep bf16/f16 storage (`half`), widened by the
// GEMM while packing. Autograd state (requiresGrad, grad, the creating tape node) lives here; the tape is in nn/tape.ts.
import { allocRaw } from "./arena.js";

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
    if (this.gradStale && this.gradBuf) {
      this.gradBuf.fill(0);
      this.gradStale = false;
    }
    return this.gradBuf;
  }

  set grad(g: Float32Array | null) {
    this.gradBuf = g;
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
    if (!this.gradBuf) {
      this.gradBuf = new Float32Array(this.size);
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
