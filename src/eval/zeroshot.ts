// Zero-shot multiple choice with lm-eval semantics: acc = argmax of the summed continuation log-likelihood; acc_norm =
// argmax of log-likelihood divided by the choice's length in characters (lm-eval's completion_len); stderr = sample
// standard deviation / √n (lm-eval's mean_stderr).
import { DataError, requireData } from "../io/data.js";
import { readJsonl } from "../io/datasets.js";
import type { Tokenizer } from "../io/tokenizer.js";
import type { CausalLM } from "../models/registry.js";
import { type BosPolicy, type LoglikRequest, loglikelihood } from "./loglik.js";
import { getTask } from "./tasks/index.js";
import type { McDoc, Task } from "./tasks/types.js";

export interface TaskResult {
  acc: number;
  acc_stderr: number;
  acc_norm?: number;
  acc_norm_stderr?: number;
  n: number;
  truncated: number;
  forwards: number;
  seconds: number;
}

export function loadDocs(task: Task, limit?: number): McDoc[] {
  const path = requireData(...task.file);
  const rows = readJsonl(path);
  const n = limit ? Math.min(limit, rows.length) : rows.length;
  const docs: McDoc[] = [];
  for (let i = 0; i < n; i++) {
    try {
      docs.push(task.toDoc(rows[i] as Record<string, unknown>));
    } catch (e) {
      if (e instanceof DataError) throw new DataError(`${path}:${i + 1}: ${e.message}`);
      throw e;
    }
  }
  return docs;
}

/** The loglikelihood requests of one document, in choice order. */
export function requestsOf(task: Task, d: McDoc): LoglikRequest[] {
  if (task.multipleInputs)
    return (d.context as string[]).map((c) => ({ context: c, continuation: task.delimiter + d.choices[0] }));
  return d.choices.map((c) => ({ context: d.context as string, continuation: task.delimiter + c }));
}

function meanStderr(xs: number[]): [number, number] {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return [mean, 0];
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return [mean, Math.sqrt(v / n)];
}

function argmax(xs: number[]): number {
  let b = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[b]) b = i;
  return b;
}

export function evaluateTask(
  model: CausalLM,
  tok: Tokenizer,
  name: string,
  opts: { limit?: number; bos?: BosPolicy; progress?: boolean } = {},
): TaskResult {
  const task = getTask(name);
  const t0 = performance.now();
  const docs = loadDocs(task, opts.limit);
  const reqs = docs.flatMap((d) => requestsOf(task, d));
  const { results, stats } = loglikelihood(model, tok, reqs, {
    bos: opts.bos,
    progress: opts.progress ? name : undefined,
  });
  const acc: number[] = [];
  const accNorm: number[] = [];
  let k = 0;
  for (const d of docs) {
    const m = task.multipleInputs ? (d.context as string[]).length : d.choices.length;
    const ll = results.slice(k, k + m).map((r) => r.logprob);
    k += m;
    acc.push(argmax(ll) === d.gold ? 1 : 0);
    if (task.metrics.includes("acc_norm"))
      accNorm.push(argmax(ll.map((v, i) => v / [...d.choices[i]].length)) === d.gold ? 1 : 0);
  }
  const [a, as] = meanStderr(acc);
  const out: TaskResult = {
    acc: a,
    acc_stderr: as,
    n: docs.length,
    truncated: stats.truncated,
    forwards: stats.forwards,
    seconds: 0,
  };
  if (accNorm.length) [out.acc_norm, out.acc_norm_stderr] = meanStderr(accNorm);
  out.seconds = (performance.now() - t0) / 1000;
  return out;
}
