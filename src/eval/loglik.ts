// Log-likelihood of continuations given contexts, as lm-evaluation-harness computes it: lm-eval's _encode_pair
// (trailing context spaces move into the continuation; context tokens = enc(ctx), continuation tokens =
// enc(ctx + cont)[len(enc(ctx)):]),
// an empty context becomes the prefix token (BOS, else EOS), inputs are (ctx + cont)[-(L+1):][:-1] (left truncation).
// Requests with the same context run it once: its keys and values are cached per row and the continuations run after
// them (bit for bit what running each request whole gives). Requests run whole (truncated ones, unshared contexts)
// share a forward when their inputs are the same. Both are batched by length with right padding (exact under causal
// attention), and the LM head runs only on the rows that score a continuation token.
import { Progress } from "../cli/progress.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { RowsKV } from "../models/kvcache.js";
import type { CausalLM, ForwardOpts } from "../models/registry.js";
import { noGrad } from "../nn/tape.js";
import { K } from "../tensor/native.js";
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

/** Token ids of a request (arrays or Int32Arrays: a large task's requests are kept as the latter, off the JS heap). */
export interface TokenRequest {
  ctx: number[] | Int32Array;
  cont: number[] | Int32Array;
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
  /** Positions run through the model (each row's real tokens, padding not counted). */
  tokens: number;
}

export interface ScoreOpts {
  /** Bound on B·T per forward (default 4096). */
  maxBatchTokens?: number;
  /** Progress-bar label. */
  progress?: string;
  /**
   * Run a context shared by several requests once (default true): its keys and values are cached per row, and only
   * the continuations run after it. Bit for bit the same results as running every request whole (`false`).
   */
  share?: boolean;
}

/** Cached keys + values of one position over all blocks, in bytes: an upper bound from the hidden size. */
function kvBytesPerPosition(model: CausalLM): number {
  const c = model.config as { hidden_size?: number; n_embd?: number };
  return model.numBlocks * 2 * 4 * (c.hidden_size ?? c.n_embd ?? 4096);
}
/** Bound on the keys and values a chunk of contexts keeps for its continuations to read. */
const KV_BUDGET_BYTES = 256 * 2 ** 20;
/** Bound on the logits of one batch of continuation rows. */
const LOGITS_BUDGET_BYTES = 512 * 2 ** 20;

/** Logits rows with each row's log-sum-exp and argmax (native, one pass per row). */
interface Scored {
  logits: Float32Array;
  V: number;
  lse: Float64Array;
  argmax: Int32Array;
}

/** Adds the log-probs of `targets` under consecutive logits rows from `row0`; false in `greedy` once one is not the argmax. */
function addLogprobs(s: Scored, row0: number, targets: ArrayLike<number>, acc: { lp: number; greedy: boolean }): void {
  for (let j = 0; j < targets.length; j++) {
    const t = targets[j];
    acc.lp += s.logits[(row0 + j) * s.V + t] - s.lse[row0 + j];
    if (s.argmax[row0 + j] !== t) acc.greedy = false;
  }
}

/** Positions a batch may reach before its padding counts (smaller GEMMs lose more to packing than padding costs). */
const MIN_BATCH_POSITIONS = 512;
/** Largest share of a batch's positions that may be padding (once it is past MIN_BATCH_POSITIONS). */
const MAX_PADDING = 0.1;

/**
 * Batches of items, longest first, each padded to its first item's length: at most `budget` positions (at least one
 * item), ended when padding would pass MAX_PADDING of it. `accept(e, T)` may hold an item back for a later, shorter
 * batch.
 */
function packBatches<E>(
  items: E[],
  len: (e: E) => number,
  budget: number,
  accept: (e: E, T: number) => boolean = () => true,
): E[][] {
  const sorted = [...items].sort((a, b) => len(b) - len(a));
  const done = new Uint8Array(sorted.length);
  const out: E[][] = [];
  for (let r0 = 0; r0 < sorted.length; r0++) {
    if (done[r0]) continue;
    const T = len(sorted[r0]);
    const batch = [sorted[r0]];
    done[r0] = 1;
    let padding = 0;
    for (let r = r0 + 1; r < sorted.length && (batch.length + 1) * T <= budget; r++) {
      if (done[r]) continue;
      const p = padding + T - len(sorted[r]);
      const size = (batch.length + 1) * T;
      if (size > MIN_BATCH_POSITIONS && p > MAX_PADDING * size) break;
      if (!accept(sorted[r], T)) continue;
      batch.push(sorted[r]);
      done[r] = 1;
      padding = p;
    }
    out.push(batch);
  }
  return out;
}

/** Logits of the chosen rows (indices into the B·T positions) of one forward, scored. */
function rowLogits(model: CausalLM, ids: Int32Array, B: number, T: number, rows: number[], opts: ForwardOpts): Scored {
  const h = model.hidden(ids, B, T, opts);
  const C = h.shape[h.shape.length - 1];
  const sel = new Float32Array(rows.length * C);
  for (let i = 0; i < rows.length; i++) sel.set(h.data.subarray(rows[i] * C, (rows[i] + 1) * C), i * C);
  const logits = model.head(new Tensor(sel, [rows.length, C]));
  const [M, V] = logits.shape;
  const lse = new Float64Array(M);
  const argmax = new Int32Array(M);
  K.rowLogsumexp(lse, argmax, logits.data, M, V);
  return { logits: logits.data, V, lse, argmax };
}

/** Scores token requests (each must fit the context, or is left-truncated to it and counted). */
export function scoreTokens(
  model: CausalLM,
  reqs: TokenRequest[],
  opts: ScoreOpts = {},
): { results: LoglikResult[]; stats: ScoreStats } {
  const L = model.maxContext;
  const stats: ScoreStats = { forwards: 0, truncated: 0, tokens: 0 };
  const budget = opts.maxBatchTokens ?? 4096;
  const acc = reqs.map(() => ({ lp: 0, greedy: true }));
  const bar = opts.progress ? new Progress(opts.progress, reqs.length, "req") : null;
  // Requests whose contexts are shared (and nothing is truncated) take the cached path; the rest run whole.
  const byCtx = new Map<string, number[]>();
  const whole: number[] = [];
  reqs.forEach((r, i) => {
    if (r.cont.length === 0) throw new Error(`loglikelihood: request ${i} has an empty continuation`);
    if (r.ctx.length === 0) throw new Error(`loglikelihood: request ${i} has an empty context`);
    if (r.ctx.length + r.cont.length > L + 1) {
      stats.truncated++;
      whole.push(i);
      return;
    }
    // A context run on its own would get the rotary frequencies of a shorter forward than the whole (longrope).
    if (model.ropeSwitch !== undefined && r.ctx.length + r.cont.length - 1 > model.ropeSwitch) {
      whole.push(i);
      return;
    }
    const key = r.ctx.join(",");
    const g = byCtx.get(key);
    if (g) g.push(i);
    else byCtx.set(key, [i]);
  });
  const groups: number[][] = [];
  for (const g of byCtx.values()) {
    if (opts.share === false || g.length < 2) whole.push(...g);
    else groups.push(g);
  }
  const run: Run = { model, reqs, budget, acc, stats, bar };
  noGrad(() => {
    scoreWhole(run, whole);
    scoreShared(run, groups);
  });
  bar?.end();
  return { results: acc.map((a) => ({ logprob: a.lp, greedy: a.greedy })), stats };
}

/** What the parts of one scoring run share: the model, the requests, the batch budget, and where results go. */
interface Run {
  model: CausalLM;
  reqs: TokenRequest[];
  budget: number;
  acc: { lp: number; greedy: boolean }[];
  stats: ScoreStats;
  bar: Progress | null;
}

/** Each request run as one sequence (ctx + cont)[-(L+1):][:-1]; requests with the same input share a row. */
function scoreWhole(run: Run, which: number[]): void {
  const { model, reqs, budget, acc, stats, bar } = run;
  const L = model.maxContext;
  // input sequence → requests reading it
  const inputs = new Map<string, { ids: Int32Array; users: { req: number; contLen: number }[] }>();
  for (const i of which) {
    const r = reqs[i];
    let all = [...r.ctx, ...r.cont];
    if (all.length > L + 1) all = all.slice(all.length - (L + 1));
    const ids = Int32Array.from(all.slice(0, -1));
    const key = ids.join(",");
    let e = inputs.get(key);
    if (!e) inputs.set(key, (e = { ids, users: [] }));
    e.users.push({ req: i, contLen: r.cont.length });
  }
  // longrope: a row padded into a batch must not cross the length where the model's rotary frequencies change
  const sw = model.ropeSwitch ?? Number.POSITIVE_INFINITY;
  const sameSide = (e: { ids: Int32Array }, T: number) => e.ids.length > sw === T > sw;
  for (const batch of packBatches([...inputs.values()], (e) => e.ids.length, budget, sameSide)) {
    const T = batch[0].ids.length;
    const B = batch.length;
    const ids = new Int32Array(B * T);
    for (let b = 0; b < batch.length; b++) ids.set(batch[b].ids, b * T);
    stats.forwards++;
    stats.tokens += batch.reduce((a, e) => a + e.ids.length, 0);
    // rows whose logits are needed: the last contLen positions of each input
    const rows: number[] = [];
    const owners: { req: number; from: number; n: number }[] = [];
    batch.forEach((e, b) => {
      const maxCont = Math.max(...e.users.map((u) => u.contLen));
      const from = Math.max(0, e.ids.length - maxCont);
      const base = rows.length;
      for (let p = from; p < e.ids.length; p++) rows.push(b * T + p);
      for (const u of e.users)
        owners.push({ req: u.req, from: base + (e.ids.length - from) - u.contLen, n: u.contLen });
    });
    const logits = rowLogits(model, ids, B, T, rows, {});
    for (const o of owners) addLogprobs(logits, o.from, reqs[o.req].cont.slice(-o.n), acc[o.req]);
    bar?.tick(batch.reduce((a, e) => a + e.users.length, 0));
  }
}

/**
 * Requests grouped by context. Contexts run once, in batches (their keys and values kept per row; the logits at each
 * context's last position score every continuation's first token); then the continuations' other tokens run as rows
 * of their own after their context's cached keys and values (continuations identical but for their last token share
 * a row). Contexts are taken in chunks whose keys and values fit the cache budget; the continuation batches read
 * them in place.
 */
function scoreShared(run: Run, groups: number[][]): void {
  const { model, reqs, budget, acc, stats, bar } = run;
  const L = model.maxContext;
  // Context positions per chunk: within the budget, and at most 4 batches (a larger chunk buys nothing and stops
  // fitting the caches).
  const chunkMax = Math.max(1, Math.min(4 * budget, Math.floor(KV_BUDGET_BYTES / kvBytesPerPosition(model))));
  // Every position of a continuation row is scored, so its batches also keep their logits within LOGITS_BUDGET_BYTES
  // (4096 rows of a 128K vocabulary would be 2 GB).
  const rowBudget = Math.max(1, Math.min(budget, Math.floor(LOGITS_BUDGET_BYTES / (4 * model.vocabSize))));
  const ctxLen = (g: number[]) => reqs[g[0]].ctx.length;
  groups.sort((a, b) => ctxLen(b) - ctxLen(a));
  for (let s = 0; s < groups.length; ) {
    let e = s + 1;
    for (let n = ctxLen(groups[s]); e < groups.length && n + ctxLen(groups[e]) <= chunkMax; e++) n += ctxLen(groups[e]);
    const chunk = groups.slice(s, e);
    s = e;
    // Contexts, then the continuation rows: cont[:-1] after its context (cached in `kv`, row `row`).
    type Row = { kv: RowsKV; row: number; past: number; ids: ArrayLike<number>; users: number[] };
    const rows: Row[] = [];
    for (const batch of packBatches(chunk, ctxLen, budget)) {
      const B = batch.length;
      const T = ctxLen(batch[0]);
      const ids = new Int32Array(B * T);
      for (let b = 0; b < B; b++) ids.set(reqs[batch[b][0]].ctx, b * T);
      const kv = new RowsKV(model.numBlocks, new Int32Array(B));
      stats.forwards++;
      stats.tokens += batch.reduce((a, g) => a + ctxLen(g), 0);
      const last = batch.map((g, b) => b * T + ctxLen(g) - 1);
      const first = rowLogits(model, ids, B, T, last, { cache: kv });
      batch.forEach((g, b) => {
        const seen = new Map<string, Row>();
        for (const i of g) {
          addLogprobs(first, b, [reqs[i].cont[0]], acc[i]);
          const c = reqs[i].cont;
          if (c.length < 2) continue;
          const key = c.slice(0, -1).join(",");
          const r = seen.get(key);
          if (r) r.users.push(i);
          else seen.set(key, { kv, row: b, past: ctxLen(g), ids: c.slice(0, -1), users: [i] });
        }
        rows.push(...seen.values());
      });
    }
    // A row whose context + padding would pass the model's positions waits for a shorter batch (its own length
    // always fits: ctx + cont ≤ L + 1).
    for (const batch of packBatches(
      rows,
      (r) => r.ids.length,
      rowBudget,
      (r, T) => r.past + T <= L,
    )) {
      const B = batch.length;
      const T = batch[0].ids.length;
      const x = new Int32Array(B * T);
      const want: number[] = [];
      batch.forEach((r, b) => {
        x.set(r.ids, b * T);
        for (let t = 0; t < r.ids.length; t++) want.push(b * T + t);
      });
      const offsets = Int32Array.from(batch, (r) => r.past);
      const cache = new RowsKV(model.numBlocks, offsets, (i, b) => batch[b].kv.rowKV(i, batch[b].row));
      stats.forwards++;
      stats.tokens += want.length;
      const logits = rowLogits(model, x, B, T, want, { cache });
      let base = 0;
      for (const r of batch) {
        for (const i of r.users) addLogprobs(logits, base, reqs[i].cont.slice(1), acc[i]);
        base += r.ids.length;
      }
    }
    bar?.tick(chunk.reduce((a, g) => a + g.length, 0));
  }
}

export function loglikelihood(
  model: CausalLM,
  tok: Tokenizer,
  reqs: LoglikRequest[],
  opts: ScoreOpts & { bos?: BosPolicy } = {},
): { results: LoglikResult[]; stats: ScoreStats } {
  // Ids as Int32Arrays, one per distinct context: tens of thousands of JS arrays (HellaSwag's 40,168 requests took
  // 94 MB of heap) made every major GC of the run slower.
  const ctxs = new Map<string, Int32Array>();
  const enc = reqs.map((r, i): TokenRequest => {
    const p = encodePair(tok, r.context, r.continuation, opts.bos);
    const key = p.ctx.join(",");
    let ctx = ctxs.get(key);
    if (!ctx) ctxs.set(key, (ctx = Int32Array.from(p.ctx)));
    if (p.cont.length === 0)
      throw new Error(
        `loglikelihood: request ${i} (continuation ${JSON.stringify(r.continuation)}) has no tokens of its own: ` +
          "this tokenizer encodes context + continuation in no more tokens than the context alone (a merge across " +
          "the boundary), and lm-eval's _encode_pair asserts on it too",
      );
    return { ctx, cont: Int32Array.from(p.cont) };
  });
  return scoreTokens(model, enc, opts);
}
