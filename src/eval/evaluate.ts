// evaluate(): perplexities and zero-shot tasks in one call (what `perp eval` and `perp run` report).
import { readFileSync } from "node:fs";
import { DataError } from "../io/data.js";
import { evalText } from "../io/datasets.js";
import type { Tokenizer } from "../io/tokenizer.js";
import type { CausalLM } from "../models/registry.js";
import type { BosPolicy } from "./loglik.js";
import { type PerplexityResult, perplexity } from "./perplexity.js";
import { getTask } from "./tasks/index.js";
import { evaluateTask, type TaskResult } from "./zeroshot.js";

export interface EvaluateOptions {
  ppl?: string[];
  textFile?: string;
  seqlen?: number;
  maxTokens?: number;
  tasks?: string[];
  limit?: number;
  bos?: BosPolicy;
  progress?: boolean;
}

export interface EvaluateResult {
  perplexity: Record<string, number>;
  perplexity_details: Record<string, PerplexityResult>;
  tasks: Record<string, TaskResult>;
  seconds: number;
}

export async function evaluate(model: CausalLM, tok: Tokenizer, opts: EvaluateOptions): Promise<EvaluateResult> {
  const t0 = performance.now();
  for (const t of opts.tasks ?? []) getTask(t); // fail fast on a typo
  const out: EvaluateResult = { perplexity: {}, perplexity_details: {}, tasks: {}, seconds: 0 };
  const sets: [string, () => Promise<string>][] = (opts.ppl ?? []).map((n) => [n, () => evalText(n)]);
  if (opts.textFile) {
    const f = opts.textFile;
    sets.push([
      f,
      async () => {
        try {
          return readFileSync(f, "utf8");
        } catch {
          throw new DataError(`${f}: cannot read the text file`);
        }
      },
    ]);
  }
  for (const [name, load] of sets) {
    const r = perplexity(
      model,
      tok,
      await load(),
      {
        seqlen: opts.seqlen,
        maxTokens: opts.maxTokens,
        maxWindows: name === "c4" ? 256 : undefined,
        progress: opts.progress,
      },
      name,
    );
    out.perplexity[name] = r.ppl;
    out.perplexity_details[name] = r;
  }
  for (const t of opts.tasks ?? [])
    out.tasks[t] = evaluateTask(model, tok, t, { limit: opts.limit, bos: opts.bos, progress: opts.progress });
  out.seconds = (performance.now() - t0) / 1000;
  return out;
}
