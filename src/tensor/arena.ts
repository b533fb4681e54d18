// A step-scoped buffer arena: inside withArena(), activation and gradient buffers are recycled from earlier steps
// instead of freshly allocated (a fresh multi-megabyte Float32Array costs a zeroing pass and a page fault per 4 KiB
// on first touch, inside the GEMM that writes it). Buffers are handed out zeroed, like new Float32Array(n). Only for
// code whose results do not outlive the scope (a training step, an evaluation window).
import { K } from "./native.js";

/** Buffers from this many floats up (4 MiB) are asked to live on 2 MiB pages (see newF32). */
const HUGE_MIN = 1 << 20;

/**
 * A zeroed Float32Array of n elements, like new Float32Array(n), but starting on a cache line (K.allocF32: the vector
 * loads and stores of the kernels then never straddle two lines); a large one is first asked to live on 2 MiB pages
 * (K.adviseHuge; PERP_HUGEPAGES=0 turns that off), while its zero pages are still untouched: GEMMs streaming it then miss
 * the TLB far less often. Its `.buffer` is 64 bytes longer than the data: view it with byteOffset and length.
 */
export function newF32(n: number): Float32Array {
  const a = K.allocF32(n);
  if (n >= HUGE_MIN) K.adviseHuge(a);
  return a;
}

export class Arena {
  private readonly free = new Map<number, Float32Array[]>();
  private used: Float32Array[] = [];

  take(n: number, zero = true): Float32Array {
    const list = this.free.get(n);
    const b = list?.pop();
    const out = b ? (zero ? b.fill(0) : b) : newF32(n);
    this.used.push(out);
    return out;
  }

  /** Position in the hand-out list, for releaseSince. */
  mark(): number {
    return this.used.length;
  }

  /**
   * Takes back every buffer handed out since `mark` except those whose storage backs one of `keep`, for reuse at
   * once (a checkpointed block's intermediates, dead as soon as its output exists). Only for buffers nothing
   * references any more.
   */
  releaseSince(mark: number, keep: readonly Float32Array[] = []): void {
    for (const b of this.used.splice(mark)) {
      if (keep.some((k) => k.buffer === b.buffer)) this.used.push(b);
      else this.recycle(b);
    }
  }

  reset(): void {
    for (const b of this.used) this.recycle(b);
    this.used = [];
  }

  private recycle(b: Float32Array): void {
    let list = this.free.get(b.length);
    if (!list) this.free.set(b.length, (list = []));
    list.push(b);
  }
}

let active: Arena | null = null;

/** The arena in force (inside withArena), if any. */
export function activeArena(): Arena | null {
  return active;
}

/** A zeroed Float32Array of n elements, from the active arena if there is one. */
export function alloc(n: number): Float32Array {
  return active && n >= 4096 ? active.take(n) : newF32(n);
}

/** Like alloc, but a recycled buffer keeps stale contents: only for outputs a kernel overwrites entirely. */
export function allocRaw(n: number): Float32Array {
  return active && n >= 4096 ? active.take(n, false) : newF32(n);
}

/** Runs fn with `arena` active; afterwards every buffer it handed out is free for reuse (do not keep them). */
export function withArena<T>(arena: Arena, fn: () => T): T {
  const prev = active;
  active = arena;
  try {
    return fn();
  } finally {
    active = prev;
    arena.reset();
  }
}
