// Sampling for sanity checks: greedy (temperature 0) or temperature sampling with a seeded RNG. A KV cache keeps
// every block's keys and values, so each new token runs through the model once; once the sequence outgrows the
// context, each step re-runs the left-cropped context (the last maxContext tokens) as transformers' pipelines do.
import { noGrad } from "../nn/tape.js";
import { Rng } from "../tensor/rng.js";
import { Tensor } from "../tensor/tensor.js";
import { KVCache } from "./kvcache.js";
import type { CausalLM } from "./registry.js";

export interface GenerateOptions {
  maxNewTokens?: number;
  temperature?: number;
  seed?: number;
  eosId?: number | null;
  /** false: no KV cache (every step runs the whole context; the reference the cached path is tested against). */
  cache?: boolean;
}

/**
 * Logits (V) of the next token after `ids`. With a cache, `ids` are only the tokens after the cached ones (the cache
 * then holds them too); without, the last maxContext of them are run from scratch.
 */
export function nextLogits(model: CausalLM, ids: number[], cache?: KVCache): Float32Array {
  const ctx = cache ? ids : ids.slice(-model.maxContext);
  return noGrad(() => {
    const before = cache?.length ?? 0;
    const h = model.hidden(Int32Array.from(ctx), 1, ctx.length, { cache });
    if (cache && cache.length !== before + ctx.length)
      throw new Error(
        `${model.config.model_type ?? "this model"}: hidden() ignored the KV cache (generate with { cache: false })`,
      );
    const C = h.shape[h.shape.length - 1];
    const last = new Tensor(h.data.slice((ctx.length - 1) * C, ctx.length * C), [1, C]);
    return model.head(last).data;
  });
}

/** Whether a cached forward of `n` new positions after `cached` ones reaches past the model's longrope switch. */
export function crossesRopeSwitch(model: CausalLM, cached: number, n: number): boolean {
  const sw = model.ropeSwitch;
  return sw !== undefined && cached <= sw && cached + n > sw;
}

export function* generate(model: CausalLM, prompt: number[], opts: GenerateOptions = {}): Generator<number> {
  const n = opts.maxNewTokens ?? 64;
  const temp = opts.temperature ?? 0;
  const rng = new Rng(opts.seed ?? 0);
  const ids = [...prompt];
  // Sized for the whole generation (at most the context): the buffers are allocated once, per block, on first use.
  const cache = opts.cache === false ? null : new KVCache(model.numBlocks, Math.min(model.maxContext, ids.length + n));
  let fresh = ids; // tokens the cache has not seen yet
  for (let s = 0; s < n; s++) {
    let logits: Float32Array;
    if (!cache) {
      logits = nextLogits(model, ids);
    } else {
      if (!cache.fits(fresh.length)) {
        // the sequence outgrew the context: from now on every step runs the last maxContext tokens from scratch
        cache.reset();
        fresh = ids.slice(-model.maxContext);
      } else if (crossesRopeSwitch(model, cache.length, fresh.length)) {
        // longrope: the keys cached so far were rotated with the short factors; recompute them with the long ones
        cache.reset();
        fresh = ids;
      }
      logits = nextLogits(model, fresh, cache);
    }
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
    fresh = [next];
    yield next;
    if (opts.eosId !== undefined && opts.eosId !== null && next === opts.eosId) return;
  }
}
