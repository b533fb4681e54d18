// Sampling for sanity checks: greedy (temperature 0) or temperature sampling with a seeded RNG. No KV cache: each
// step re-runs the (left-cropped) context, which is fine for the small models this is meant to eyeball.
import { noGrad } from "../nn/tape.js";
import { Rng } from "../tensor/rng.js";
import { Tensor } from "../tensor/tensor.js";
import type { CausalLM } from "./registry.js";

export interface GenerateOptions {
  maxNewTokens?: number;
  temperature?: number;
  seed?: number;
  eosId?: number | null;
}

/** Logits (V) of the next token after `ids`. */
export function nextLogits(model: CausalLM, ids: number[]): Float32Array {
  const ctx = ids.slice(-model.maxContext);
  return noGrad(() => {
    const h = model.hidden(Int32Array.from(ctx), 1, ctx.length);
    const C = h.shape[h.shape.length - 1];
    const last = new Tensor(h.data.slice((ctx.length - 1) * C, ctx.length * C), [1, C]);
    return model.head(last).data;
  });
}

export function* generate(model: CausalLM, prompt: number[], opts: GenerateOptions = {}): Generator<number> {
  const n = opts.maxNewTokens ?? 64;
  const temp = opts.temperature ?? 0;
  const rng = new Rng(opts.seed ?? 0);
  const ids = [...prompt];
  for (let s = 0; s < n; s++) {
    const logits = nextLogits(model, ids);
    let next = 0;
    if (temp <= 0) {
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[next]) next = i;
    } else {
      let mx = Number.NEGATIVE_INFINITY;
      for (const v of logits) mx = Math.max(mx, v);
      const p = Array.from(logits, (v) => Math.exp((v - mx) / temp));
      let r = rng.uniform() * p.reduce((a, b) => a + b, 0);
      next = p.length - 1;
      for (let i = 0; i < p.length; i++) {
        r -= p[i];
        if (r <= 0) {
          next = i;
          break;
        }
      }
    }
    ids.push(next);
    yield next;
    if (opts.eosId !== undefined && opts.eosId !== null && next === opts.eosId) return;
  }
}
