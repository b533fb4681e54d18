// Perplexity with the HF / wanda / SparseGPT protocol: tokenize the whole text once (BOS where the tokenizer adds it),
// cut into non-overlapping windows of `seqlen` tokens, drop the tail, ppl = exp(mean next-token NLL over every
// predicted token of every window). C4 keeps only the first 256 windows (SparseGPT's c4 eval).
import { Progress } from "../cli/progress.js";
import type { Tokenizer } from "../io/tokenizer.js";
import type { CausalLM } from "../models/registry.js";
import { headNll } from "../nn/functional.js";
import { noGrad } from "../nn/tape.js";
import { Arena, withArena } from "../tensor/arena.js";

export interface PerplexityOptions {
  seqlen?: number;
  /** Evaluate only the first N tokens of the tokenized text. */
  maxTokens?: number;
  /** Keep only the first N windows (256 for C4). */
  maxWindows?: number;
  /** Windows per forward call. */
  batch?: number;
  /** Most logits (floats) held at once: the LM head runs over chunks of rows within it (default 64M: 256 MB). */
  maxLogits?: number;
  progress?: boolean;
}

export interface PerplexityResult {
  ppl: number;
  nll: number;
  windows: number;
  seqlen: number;
  tokens: number;
  predicted: number;
  seconds: number;
  tokensPerS: number;
}

export class PerplexityError extends Error {}

export function defaultSeqlen(model: CausalLM): number {
  return Math.min(model.maxContext, 4096);
}

export function perplexityOfIds(
  model: CausalLM,
  ids: number[],
  opts: PerplexityOptions = {},
  label = "ppl",
): PerplexityResult {
  const L = opts.seqlen ?? defaultSeqlen(model);
  if (!(L >= 2)) throw new PerplexityError(`seqlen must be >= 2 (got ${L})`);
  if (L > model.maxContext) throw new PerplexityError(`seqlen ${L} exceeds the model's context ${model.maxContext}`);
  const toks = opts.maxTokens ? ids.slice(0, opts.maxTokens) : ids;
  let n = Math.floor(toks.length / L);
  if (opts.maxWindows !== undefined) n = Math.min(n, opts.maxWindows);
  if (n === 0) throw new PerplexityError(`the text has ${toks.length} tokens, fewer than one window of ${L}`);
  const B = Math.max(1, opts.batch ?? 1);
  const t0 = performance.now();
  const bar = opts.progress ? new Progress(label, n, "win") : null;
  let nll = 0;
  let count = 0;
  const arena = new Arena();
  for (let w = 0; w < n; w += B) {
    const b = Math.min(B, n - w);
    const input = Int32Array.from(toks.slice(w * L, (w + b) * L));
    const targets = new Int32Array(b * L);
    for (let i = 0; i < b * L; i++) targets[i] = i % L === L - 1 ? -100 : input[i + 1];
    withArena(arena, () => {
      // the LM head over chunks of rows: a large vocabulary's logits are never in memory whole (see headNll)
      nll += noGrad(
        () => headNll(model.hidden(input, b, L), (x) => model.head(x), targets, model.vocabSize, opts.maxLogits).sum,
      );
    });
    count += b * (L - 1);
    bar?.tick(b, `ppl ${Math.exp(nll / count).toFixed(3)}`);
  }
  bar?.end();
  const s = (performance.now() - t0) / 1000;
  return {
    ppl: Math.exp(nll / count),
    nll: nll / count,
    windows: n,
    seqlen: L,
    tokens: toks.length,
    predicted: count,
    seconds: s,
    tokensPerS: (n * L) / s,
  };
}

/**
 * Token ids of `text`. With maxTokens, only a prefix of the text is tokenized (cut at a newline, grown until it holds
 * maxTokens + 256 tokens): BPE merges never reach that far across a line break, so the first maxTokens ids equal
 * those of the whole text, at a fraction of the cost.
 */
export function tokenizeForEval(tokenizer: Tokenizer, text: string, maxTokens?: number): number[] {
  if (!maxTokens) return tokenizer.encode(text);
  let chars = Math.min(text.length, (maxTokens + 256) * 6);
  for (;;) {
    let cut = chars >= text.length ? text.length : text.lastIndexOf("\n", chars);
    if (cut <= 0) cut = chars;
    const ids = tokenizer.encode(text.slice(0, cut));
    if (cut >= text.length || ids.length >= maxTokens + 256) return ids;
    chars *= 2;
  }
}

export function perplexity(
  model: CausalLM,
  tokenizer: Tokenizer,
  text: string,
  opts: PerplexityOptions = {},
  label = "ppl",
): PerplexityResult {
  if (!text.trim()) throw new PerplexityError("the evaluation text is empty");
  return perplexityOfIds(model, tokenizeForEval(tokenizer, text, opts.maxTokens), opts, label);
}
