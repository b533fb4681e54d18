// Log-likelihood of continuations given contexts, as lm-evaluation-harness computes it: lm-eval's _encode_pair
// (trailing context spaces move into the continuation; context tokens = enc(ctx), continuation tokens =
// enc(ctx + cont)[len(enc(ctx)):]),
// an empty context becomes the prefix token (BOS, else EOS), inputs are (ctx + cont)[-(L+1):][:-1] (left truncation).
// Requests with the same input tokens share one forward pass; the rest are batched by length with right padding
// (exact under causal attention), and the LM head runs only on the continuation rows.
import { Progress } from "../cli/progress.js";
import type { Tokenizer } from "../io/tokenizer.js";
import type { CausalLM } from "../models/registry.js";
import { noGrad } from "../nn/tape.js";
import { Tensor } from "../tensor/tensor.js";

export interface LoglikRequest {
  context: string;
  continuation: string;
}

export interface LoglikResult {
  logprob: number;
  /** Every continuation token is the argmax of its distribution. */
  greedy: boolean;
}

export interface TokenRequest {
  ctx: number[];
  cont: number[];
}

/** BOS handling: "tokenizer" = what tokenizer(text) adds (current lm-eval); "none" = no special tokens (lm-eval ≤ 0.4.3). */
export type BosPolicy = "tokenizer" | "none";

export function encodePair(
  tok: Tokenizer,
  context: string,
  continuation: string,
  bos: BosPolicy = "tokenizer",
): TokenRequest {
  const add = bos === "tokenizer";
  if (context === "") {
    const prefix = tok.bosId ?? tok.eosId;
    if (prefix === null) throw new Error("loglikelihood: empty context and the tokenizer has neither BOS nor EOS");
    return { ctx: [prefix], cont: tok.encode(continuation, false) };
  }
  const nSpaces = context.length - context.trimEnd().length;
  if (nSpaces > 0) {
    continuation = context.slice(context.length - nSpaces) + continuation;
    context = context.slice(0, context.length - nSpaces);
  }
  // As lm-eval: the context is tokenized on its own and the continuation is the rest of the whole text's tokens, so
  // the model reads enc(ctx) + enc(ctx + cont)[len(enc(ctx)):], not enc(ctx + cont): the two differ where a merge
  // crosses the boundary (one-word sentencepiece pre-tokenization, e.g. "Answer:" + " no").
  const whole = tok.encode(context + continuation, add);
  const ctx = tok.encode(context, add);
  return { ctx, cont: whole.slice(ctx.length) };
}

export interface ScoreStats {
  forwards: number;
  truncated: number;
  tokens: number;
}

/** Scores token requests; `maxBatchTokens` bounds B·T per forward. */
export function scoreTokens(
  model: CausalLM,
  reqs: TokenRequest[],
  opts: { maxBatchTokens?: number; progress?: string } = {},
): { results: LoglikResult[]; stats: ScoreStats } {
  const L = model.maxContext;
  const stats: ScoreStats = { forwards: 0, truncated: 0, tokens: 0 };
  // input sequence → requests reading it
  const inputs = new Map<string, { ids: number[]; users: { req: number; contLen: number }[] }>();
  reqs.forEach((r, i) => {
    if (r.cont.length === 0) throw new Error(`loglikelihood: request ${i} has an empty continuation`);
    let all = [...r.ctx, ...r.cont];
    if (all.length > L + 1) {
      stats.truncated++;
      all = all.slice(all.length - (L + 1));
    }
    const ids = all.slice(0, -1);
    const key = ids.join(",");
    let e = inputs.get(key);
    if (!e) inputs.set(key, (e = { ids, users: [] }));
    e.users.push({ req: i, contLen: r.cont.length });
  });
  const uniq = [...inputs.values()].sort((a, b) => b.ids.length - a.ids.length);
  const budget = opts.maxBatchTokens ?? 4096;
  const results: LoglikResult[] = new Array(reqs.length);
  const bar = opts.progress ? new Progress(opts.progress, reqs.length, "req") : null;
  for (let s = 0; s < uniq.length; ) {
    const T = uniq[s].ids.length;
    const B = Math.max(1, Math.min(uniq.length - s, Math.floor(budget / T)));
    const batch = uniq.slice(s, s + B);
    s += B;
    const ids = new Int32Array(B * T);
    for (let b = 0; b < batch.length; b++) ids.set(batch[b].ids, b * T);
    stats.forwards++;
    stats.tokens += batch.reduce((a, e) => a + e.ids.length, 0);
    // rows whose logits are needed: the last contLen positions of each input
    const rows: number[] = [];
    const owners: { req: number; from: number; n: number; end: number }[] = [];
    batch.forEach((e, b) => {
      const maxCont = Math.max(...e.users.map((u) => u.contLen));
      const from = Math.max(0, e.ids.length - maxCont);
      const base = rows.length;
      for (let p = from; p < e.ids.length; p++) rows.push(b * T + p);
      for (const u of e.users)
        owners.push({ req: u.req, from: base + (e.ids.length - from) - u.contLen, n: u.contLen, end: b });
    });
    const logits = noGrad(() => {
      const h = model.hidden(ids, B, T);
      const C = h.shape[h.shape.length - 1];
      const sel = new Float32Array(rows.length * C);
      for (let i = 0; i < rows.length; i++) sel.set(h.data.subarray(rows[i] * C, (rows[i] + 1) * C), i * C);
      return model.head(new Tensor(sel, [rows.length, C]));
    });
    const V = logits.shape[1];
    for (const o of owners) {
      const cont = reqs[o.req].cont;
      let lp = 0;
      let greedy = true;
      for (let j = 0; j < o.n; j++) {
        const row = logits.data.subarray((o.from + j) * V, (o.from + j + 1) * V);
        let mx = Number.NEGATIVE_INFINITY;
        let am = 0;
        for (let v = 0; v < V; v++)
          if (row[v] > mx) {
            mx = row[v];
            am = v;
          }
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(row[v] - mx);
        const t = cont[cont.length - o.n + j];
        lp += row[t] - mx - Math.log(sum);
        if (am !== t) greedy = false;
      }
      results[o.req] = { logprob: lp, greedy };
    }
    bar?.tick(batch.reduce((a, e) => a + e.users.length, 0));
  }
  bar?.end();
  return { results, stats };
}

export function loglikelihood(
  model: CausalLM,
  tok: Tokenizer,
  reqs: LoglikRequest[],
  opts: { bos?: BosPolicy; maxBatchTokens?: number; progress?: string } = {},
): { results: LoglikResult[]; stats: ScoreStats } {
  return scoreTokens(
    model,
    reqs.map((r) => encodePair(tok, r.context, r.continuation, opts.bos)),
    opts,
  );
}
