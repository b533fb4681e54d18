// Module/Parameter: named parameters and children in registration order, so names map 1:1 to HF state-dict keys.
import { Tensor } from "../tensor/tensor.js";

export class Module {
  private readonly params = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  protected registerParam(name: string, t: Tensor): Tensor {
    this.params.set(name, t);
    return t;
  }

  protected unregisterParam(name: string): void {
    this.params.delete(name);
  }

  protected registerModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** Every parameter with its dotted name (HF state-dict order of registration). */
  namedParameters(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.params) out.push([prefix + n, t]);
    for (const [n, m] of this.children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [n, m] of this.children) {
      const name = prefix + n;
      out.push([name, m], ...m.namedModules(`${name}.`));
    }
    return out;
  }

  /** Sets requiresGrad on every parameter (then enable the trainable subset). */
  requiresGrad(flag: boolean): this {
    for (const p of this.parameters()) p.requiresGrad = flag;
    return this;
  }

  /** Zeroes the gradients in place (keeping the buffers avoids re-faulting them in every step). */
  /** Zeroes every parameter's gradient (O(1) each: see Tensor.clearGrad). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.clearGrad();
  }
}

/** A trainable tensor. */
export function parameter(data: Float32Array, shape: number[], name = ""): Tensor {
  const t = new Tensor(data, shape, true);
  t.name = name;
  return t;
}

export class ModuleList<M extends Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => {
      this.registerModule(String(i), m);
    });
  }
}
