// A small tape autograd: ops append nodes in execution order, backward walks them in reverse. requiresGrad is per
// tensor; an op whose inputs need no gradient records nothing, so frozen weights never get weight-gradient GEMMs.
import { activeArena, allocRaw, newF32 } from "../tensor/arena.js";
import { K } from "../tensor/native.js";
import { type GradNode, Tensor } from "../tensor/tensor.js";

interface Tape {
  nodes: { node: GradNode; out: Tensor }[];
}

let current: Tape | null = { nodes: [] };
let enabled = true;

/** Counters of the work done by backward passes (tests use them to prove that frozen weights cost no dW GEMM). */
export const gradStats = { dWGemms: 0, dWFlops: 0, dXGemms: 0 };

export function isGradEnabled(): boolean {
  return enabled && current !== null;
}

/** Runs fn without recording (inference / evaluation fast path). */
export function noGrad<T>(fn: () => T): T {
  const prev = enabled;
  enabled = false;
  try {
    return fn();
  } finally {
    enabled = prev;
  }
}

/** Records `out` as produced by `backward` from `inputs` if grad mode is on and any input needs a gradient. */
export function record(out: Tensor, inputs: Tensor[], backward: (gOut: Float32Array) => void): Tensor {
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) return out;
  out.requiresGrad = true;
  const node: GradNode = { inputs, backward };
  out.node = node;
  (current as Tape).nodes.push({ node, out });
  return out;
}

// Gradients of non-leaf tensors during one backward pass.
let pending: Map<Tensor, Float32Array> | null = null;
// Buffers of that map that more than one tensor holds (see addGrad's `share`): accumulating into one makes a new buffer.
let shared: Set<Float32Array> = new Set();

/**
 * Adds g to the gradient of t (a leaf accumulates into .grad; an intermediate into the pass's map). `share`: g is also
 * the gradient of another tensor (add()'s two inputs), so it is never accumulated into in place: the first sum goes to
 * a new buffer (copy on write, instead of copying g up front).
 */
export function addGrad(t: Tensor, g: Float32Array, share = false): void {
  if (!t.requiresGrad) return;
  if (t.isLeaf) {
    const { buf, beta } = t.gradSlot();
    if (beta) K.ew(2, buf, g, null, 1);
    else buf.set(g);
    return;
  }
  const m = pending as Map<Tensor, Float32Array>;
  const prev = m.get(t);
  if (!prev) {
    m.set(t, g);
    if (share) shared.add(g);
  } else if (shared.has(prev)) {
    const sum = allocRaw(prev.length);
    K.ew(0, sum, prev, g, 0);
    m.set(t, sum);
  } else {
    K.ew(2, prev, g, null, 1);
  }
}

/**
 * Where a kernel that writes a whole gradient of intermediate `t` (n values) should write it: into the pass's pending
 * gradient of t (beta 1: the kernel accumulates, as a GEMM's C = AB + C) when t already has one of its own, else into a
 * new buffer (beta 0) that `commitGrad` then records. When several ops read one tensor (q, k and v all read the normed
 * input), their gradients are summed by the GEMMs themselves instead of by a separate pass over a new buffer each.
 */
export function gradTarget(t: Tensor, n: number): { buf: Float32Array; beta: 0 | 1; fresh: boolean } {
  const prev = !t.isLeaf && pending ? pending.get(t) : undefined;
  if (prev && !shared.has(prev) && prev.length === n) return { buf: prev, beta: 1, fresh: false };
  return { buf: allocRaw(n), beta: 0, fresh: true };
}

/** Records the gradient written to a `gradTarget` slot (a no-op when the kernel accumulated into t's own). */
export function commitGrad(t: Tensor, slot: { buf: Float32Array; fresh: boolean }): void {
  if (slot.fresh) addGrad(t, slot.buf);
}

/** The .grad buffer of a leaf that needs a gradient (allocated on first use), for kernels that accumulate in place. */
export function leafGrad(t: Tensor): Float32Array | null {
  if (!t.requiresGrad || !t.isLeaf) return null;
  if (!t.grad) t.grad = newF32(t.size);
  return t.grad;
}

/** The .grad buffer of a leaf for scatter-adding into whole rows `rows` (row length C); null if it needs none. */
export function leafGradRows(t: Tensor, rows: Int32Array, C: number): Float32Array | null {
  if (!t.requiresGrad || !t.isLeaf) return null;
  return t.gradForRows(rows, C);
}

/** For kernels that write a leaf's whole gradient: its buffer and beta (0: overwrite, 1: accumulate); null if none. */
export function leafGradSlot(t: Tensor): { buf: Float32Array; beta: 0 | 1 } | null {
  if (!t.requiresGrad || !t.isLeaf) return null;
  return t.gradSlot();
}

/** Backpropagates from `loss` (seed gradient `seed`, default 1 for a scalar), then clears the tape. */
export function backward(loss: Tensor, seed?: Float32Array): void {
  if (!current) throw new Error("backward: no tape");
  if (!loss.requiresGrad) throw new Error("backward: the loss does not depend on any tensor that requires grad");
  const tape = current;
  const outer = pending;
  const outerShared = shared;
  pending = new Map();
  shared = new Set();
  try {
    const g0 = seed ? seed.slice() : new Float32Array(loss.size).fill(1);
    if (loss.isLeaf) {
      addGrad(loss, g0);
      return;
    }
    pending.set(loss, g0);
    for (let i = tape.nodes.length - 1; i >= 0; i--) {
      const { node, out } = tape.nodes[i];
      const g = pending.get(out);
      if (!g) continue;
      pending.delete(out);
      node.backward(g);
    }
  } finally {
    tape.nodes.length = 0;
    pending = outer;
    shared = outerShared;
  }
}

/** Forgets everything recorded so far (after a forward whose backward is not wanted). */
export function clearTape(): void {
  if (current) current.nodes.length = 0;
}

/**
 * Runs fn on a tape of its own (what it records, and a backward it runs, stay off the outer tape) and returns its
 * result; the outer tape and any backward in progress are as they were afterwards.
 */
export function withPrivateTape<T>(fn: () => T): T {
  const outerTape = current;
  const outerPending = pending;
  current = { nodes: [] };
  try {
    return fn();
  } finally {
    current = outerTape;
    pending = outerPending;
  }
}

/** Whether anything on the tape reads a leaf that needs a gradient, other than `except`. */
export function tapeReadsTrainable(except: Tensor): boolean {
  return (current?.nodes ?? []).some(({ node }) => node.inputs.some((t) => t !== except && t.isLeaf && t.requiresGrad));
}

/**
 * Gradient checkpointing: runs fn(x) without keeping its intermediates; the backward re-runs it on a private tape.
 * `params` are the trainable tensors fn reads (its gradients land in their .grad as usual).
 */
export function checkpoint(fn: (x: Tensor) => Tensor, x: Tensor, params: Tensor[]): Tensor {
  if (!isGradEnabled() || !(x.requiresGrad || params.some((p) => p.requiresGrad))) return fn(x);
  // Inside a step arena, the block's intermediates go back to the arena as soon as they are dead (after the forward:
  // all but the output; after the re-run and its backward: all), so the next block reuses them and the step's
  // footprint is one block's activations plus the block outputs, which is what checkpointing is for.
  const arena = activeArena();
  const m0 = arena?.mark() ?? 0;
  const out = noGrad(() => fn(x));
  arena?.releaseSince(m0, [out.data]);
  const res = new Tensor(out.data, out.shape);
  return record(res, [x, ...params], (gOut) => {
    const outerTape = current;
    const outerPending = pending;
    const m1 = arena?.mark() ?? 0;
    current = { nodes: [] };
    try {
      const xin = new Tensor(x.data, x.shape, x.requiresGrad);
      const y = fn(xin);
      if (y.requiresGrad) backward(y, gOut);
      if (x.requiresGrad && xin.grad) {
        pending = outerPending;
        addGrad(x, xin.grad); // a leaf's .grad: not arena memory, it outlives the release below
      }
    } finally {
      current = outerTape;
      pending = outerPending;
    }
    arena?.releaseSince(m1);
  });
}
