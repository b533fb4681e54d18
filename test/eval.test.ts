// Evaluation: perplexity protocol, log-likelihood semantics, lm-eval prompt rendering, bad input, an end-to-end run.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { evaluate } from "../src/eval/evaluate.js";
import { encodePair, loglikelihood, scoreTokens } from "../src/eval/loglik.js";
import { perplexityOfIds } from "../src/eval/perplexity.js";
import { TASKS } from "../src/eval/tasks/index.js";
import { evaluateTask, loadDocs, requestsOf } from "../src/eval/zeroshot.js";
import { dataPath } from "../src/io/data.js";
import { llama2cTokenizerJson, readLlama2cTokenizer } from "../src/io/llama2c.js";
import { Tokenizer } from "../src/io/tokenizer.js";
import { nextLogits } from "../src/models/generate.js";
import { LlamaForCausalLM } from "../src/models/llama.js";

const TOK = dataPath("models", "stories260K", "tok512.bin");
const have = existsSync(TOK);

function logSoftmax(l: Float32Array, t: number): number {
  let mx = Number.NEGATIVE_INFINITY;
  for (const v of l) mx = Math.max(mx, v);
  let s = 0;
  for (const v of l) s += Math.exp(v - mx);
  return l[t] - mx - Math.log(s);
}

describe.skipIf(!have)("evaluation on a tiny random LLaMA with the stories260K tokenizer", () => {
  let tok: Tokenizer;
  const model = new LlamaForCausalLM({
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 512,
    max_position_embeddings: 24,
    tie_word_embeddings: true,
  }).initRandom(3, 0.3);

  beforeAll(() => {
    tok = new Tokenizer(llama2cTokenizerJson(readLlama2cTokenizer(TOK, 512)) as Record<string, unknown>, {
      bos_token: "<s>",
      eos_token: "</s>",
    });
  });

  it("perplexity equals a direct token-by-token computation over non-overlapping windows (tail dropped)", () => {
    const ids = tok.encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog.",
    );
    const L = 8;
    const r = perplexityOfIds(model, ids, { seqlen: L, batch: 3 });
    const n = Math.floor(ids.length / L);
    let nll = 0;
    for (let w = 0; w < n; w++)
      for (let p = 1; p < L; p++) {
        const ctx = ids.slice(w * L, w * L + p);
        nll -= logSoftmax(nextLogits(model, ctx), ids[w * L + p]);
      }
    expect(r.windows).toBe(n);
    expect(r.predicted).toBe(n * (L - 1));
    expect(Math.abs(r.ppl - Math.exp(nll / (n * (L - 1)))) / r.ppl).toBeLessThan(1e-5);
    // the LM head over chunks of rows (7 rows of logits at a time here): the same bits
    const chunked = perplexityOfIds(model, ids, { seqlen: L, batch: 3, maxLogits: 7 * model.vocabSize });
    expect(chunked.nll).toBe(r.nll);
    expect(perplexityOfIds(model, ids, { seqlen: L, maxTokens: 2 * L }).windows).toBe(2);
    expect(() => perplexityOfIds(model, ids.slice(0, 5), { seqlen: L })).toThrow(/fewer than one window/);
    expect(() => perplexityOfIds(model, ids, { seqlen: 64 })).toThrow(/exceeds the model's context 24/);
  });

  it("a continuation's log-likelihood is the sum of per-token log-probs computed one token at a time", () => {
    const req = { context: "The cat sat", continuation: " on the mat" };
    const p = encodePair(tok, req.context, req.continuation);
    const { results } = loglikelihood(model, tok, [req, { context: "The dog", continuation: " ran" }, req]);
    let lp = 0;
    for (let j = 0; j < p.cont.length; j++)
      lp += logSoftmax(nextLogits(model, [...p.ctx, ...p.cont.slice(0, j)]), p.cont[j]);
    expect(Math.abs(results[0].logprob - lp)).toBeLessThan(1e-4);
    expect(results[2].logprob).toBe(results[0].logprob);
  });

  it("tokenization boundary as lm-eval's _encode_pair: trailing context spaces join the continuation; BOS policy", () => {
    const a = encodePair(tok, "Answer: ", "yes");
    const b = encodePair(tok, "Answer:", " yes");
    expect(a).toEqual(b);
    expect(b.ctx[0]).toBe(1); // BOS from the tokenizer's post-processor
    expect(encodePair(tok, "Answer:", " yes", "none").ctx[0]).not.toBe(1);
    expect([...b.ctx, ...b.cont]).toEqual(tok.encode("Answer: yes"));
    expect(encodePair(tok, "", "hello").ctx).toEqual([1]);
    // A merge across the boundary: lm-eval reads enc(ctx) + enc(ctx + cont)[len(enc(ctx)):], not enc(ctx + cont)
    // (a BPE without pre-tokenizer, as sentencepiece files: "xa" + "bc" → whole [x, ab, c], context alone [x, a]).
    const bpe = new Tokenizer(
      {
        version: "1.0",
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: null,
        post_processor: null,
        decoder: null,
        model: {
          type: "BPE",
          dropout: null,
          unk_token: null,
          fuse_unk: false,
          byte_fallback: false,
          vocab: { x: 0, a: 1, b: 2, c: 3, ab: 4 },
          merges: ["a b"],
        },
      },
      {},
    );
    expect(bpe.encode("xabc")).toEqual([0, 4, 3]);
    expect(encodePair(bpe, "xa", "bc")).toEqual({ ctx: [0, 1], cont: [3] });
    // "xa" + "b" → [x, ab]: nothing left for the continuation (lm-eval asserts): a clear error
    expect(() => loglikelihood(model, bpe, [{ context: "xa", continuation: "b" }])).toThrow(/no tokens of its own/);
  });

  it("shared inputs share a forward pass; long inputs are left-truncated and counted", () => {
    const ctx = tok.encode("Once upon a time");
    const { stats } = scoreTokens(model, [
      { ctx, cont: [300] },
      { ctx, cont: [301] },
      { ctx: Array(40).fill(300), cont: [302, 303] },
    ]);
    expect(stats.truncated).toBe(1);
    expect(stats.forwards).toBeLessThanOrEqual(2);
  });

  it("evaluate(): one task end to end with --limit semantics", async () => {
    const r = await evaluate(model, tok, { tasks: ["piqa", "winogrande"], limit: 6 });
    expect(r.tasks.piqa.n).toBe(6);
    expect(r.tasks.piqa.acc_norm).toBeDefined();
    expect(r.tasks.winogrande.acc_norm).toBeUndefined();
    expect(r.tasks.piqa.truncated).toBeGreaterThan(0); // context 24 < most prompts: truncated from the left
    await expect(evaluate(model, tok, { tasks: ["bolq"] })).rejects.toThrow(
      /unknown task 'bolq' \(available: boolq, rte/,
    );
    const f = join(mkdtempSync(join(tmpdir(), "perp-ev-")), "empty.txt");
    writeFileSync(f, "  \n");
    await expect(evaluate(model, tok, { textFile: f })).rejects.toThrow(/empty/);
    await expect(evaluate(model, tok, { textFile: "/nonexistent/x.txt" })).rejects.toThrow(/cannot read/);
  });
});

describe("lm-eval prompt rendering of the shipped task files", () => {
  const expected: Record<string, (d: ReturnType<typeof loadDocs>[number]) => void> = {
    boolq: (d) => {
      expect(d.context).toMatch(
        /^Ethanol fuel -- All biomass goes through.*\nQuestion: does ethanol take more energy make that produces\?\nAnswer:$/s,
      );
      expect(d.choices).toEqual(["no", "yes"]);
    },
    rte: (d) => {
      expect(d.context).toBe(
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:",
      );
      expect(d.choices).toEqual(["True", "False"]);
      expect(d.gold).toBe(1);
    },
    hellaswag: (d) => {
      expect(d.context).toBe("Roof shingle removal: A man is sitting on a roof. he");
      expect(d.choices[3]).toBe("starts pulling up roofing on a roof.");
      expect(d.gold).toBe(3);
    },
    winogrande: (d) => {
      expect(d.context).toEqual([
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
      ]);
      expect(d.choices).toEqual(["always got the easier cases."]);
      expect(d.gold).toBe(1);
    },
    arc_easy: (d) => {
      expect(d.context).toBe(
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
      );
      expect(d.choices[0]).toBe("Sunlight is the source of energy for nearly all ecosystems.");
    },
    arc_challenge: (d) => expect(d.context).toMatch(/^Question: An astronomer observes .*\nAnswer:$/s),
    openbookqa: (d) => {
      expect(d.context).toMatch(/^A person wants to start saving money .* the best way to save money is to$/);
      expect(d.choices).toEqual([
        "make more phone calls",
        "quit eating lunch out",
        "buy less with monopoly money",
        "have lunch with friends",
      ]);
    },
    piqa: (d) => {
      expect(d.context).toBe("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
      expect(d.choices).toHaveLength(2);
    },
  };
  for (const [name, check] of Object.entries(expected)) {
    it.skipIf(!existsSync(dataPath(...TASKS[name].file)))(name, () => {
      const [d] = loadDocs(TASKS[name], 1);
      check(d);
      const reqs = requestsOf(TASKS[name], d);
      expect(reqs.length).toBe(name === "winogrande" ? 2 : d.choices.length);
      expect(reqs[0].continuation.startsWith(" ")).toBe(true);
    });
  }

  it("hellaswag rows in the full HF schema join ctx_a and ctx_b.capitalize(), as lm-eval does", () => {
    const row = {
      activity_label: "Roof shingle removal",
      ctx_a: "A man is sitting on a roof.",
      ctx_b: "he STARTS",
      ctx: "A man is sitting on a roof. he STARTS",
      endings: ["a [title] b", "c", "d", "e"],
      label: "0",
    };
    const d = TASKS.hellaswag.toDoc(row);
    expect(d.context).toBe("Roof shingle removal: A man is sitting on a roof. He starts");
    expect(d.choices[0]).toBe("a. b");
    const { ctx_a: _a, ctx_b: _b, ...joined } = row;
    expect(TASKS.hellaswag.toDoc(joined).context).toBe("Roof shingle removal: A man is sitting on a roof. he STARTS");
  });

  it("rte and boolq rows in either HF schema (glue / super_glue, google/boolq / super_glue) give the same docs", () => {
    const sg = TASKS.rte.toDoc({ premise: "P.", hypothesis: "H.", label: 1, idx: 0 });
    expect(TASKS.rte.toDoc({ sentence1: "P.", sentence2: "H.", label: 1, idx: 0 })).toEqual(sg);
    expect(sg.context).toBe("P.\nQuestion: H. True or False?\nAnswer:");
    const b = TASKS.boolq.toDoc({ passage: "X", question: "is it", label: 1 });
    expect(TASKS.boolq.toDoc({ passage: "X", question: "is it", answer: true })).toEqual(b);
    expect(TASKS.boolq.toDoc({ passage: "X", question: "is it", answer: false }).gold).toBe(0);
    expect(() => TASKS.rte.toDoc({ hypothesis: "H.", label: 1 })).toThrow(/missing or malformed field 'premise'/);
  });

  it("a row missing a field names the file and line", () => {
    const dir = mkdtempSync(join(tmpdir(), "perp-task-"));
    const old = process.env.PERP_DATA;
    process.env.PERP_DATA = dir;
    try {
      const p = join(dir, "tasks", "piqa");
      mkdirSync(p, { recursive: true });
      writeFileSync(
        join(p, "validation.jsonl"),
        '{"goal":"g","sol1":"a","sol2":"b","label":0}\n{"goal":"g","sol1":"a","label":1}\n',
      );
      expect(() => loadDocs(TASKS.piqa)).toThrow(/piqa\/validation.jsonl:2: piqa: missing or malformed field 'sol2'/);
      expect(() => evaluateTask(null as never, null as never, "rte")).toThrow(
        /tasks\/rte\/validation.jsonl not found \(looked in/,
      );
    } finally {
      if (old === undefined) delete process.env.PERP_DATA;
      else process.env.PERP_DATA = old;
    }
  });
});

describe.skipIf(!have)("perp eval on stories260K (CLI, --json, --limit)", () => {
  it("reports perplexity and task metrics as one JSON object", () => {
    const dir = join(mkdtempSync(join(tmpdir(), "perp-ev-")), "m");
    const run = (args: string[]) =>
      execFileSync(process.execPath, ["--import", "tsx", "src/cli/run.ts", ...args], {
        encoding: "utf8",
        env: { ...process.env, PERP_QUIET: "1" },
      });
    run(["import", "llama2c", dataPath("models", "stories260K", "stories260K.bin"), TOK, "--out", dir]);
    const out = JSON.parse(
      run([
        "eval",
        "--model",
        dir,
        "--ppl",
        "wikitext2",
        "--max-tokens",
        "4096",
        "--tasks",
        "arc_easy,boolq",
        "--limit",
        "5",
        "--json",
      ]),
    );
    expect(out.model).toBe(dir);
    expect(out.perplexity.wikitext2).toBeGreaterThan(50);
    expect(out.perplexity.wikitext2).toBeLessThan(300);
    expect(out.perplexity_details.wikitext2.windows).toBe(8);
    expect(out.tasks.arc_easy).toMatchObject({ n: 5 });
    expect(typeof out.tasks.boolq.acc_stderr).toBe("number");
    expect(out.seconds).toBeGreaterThan(0);
  });
});

describe.skipIf(!have)("prefix tokenization for --max-tokens", () => {
  it("gives the same first N ids as tokenizing the whole text", async () => {
    const { tokenizeForEval } = await import("../src/eval/perplexity.js");
    const { readFileSync } = await import("node:fs");
    const tok = new Tokenizer(llama2cTokenizerJson(readLlama2cTokenizer(TOK, 512)) as Record<string, unknown>, {
      bos_token: "<s>",
    });
    const text = readFileSync(dataPath("datasets", "wikitext-2-raw-v1", "test.txt"), "utf8").slice(0, 200_000);
    const full = tok.encode(text);
    for (const n of [100, 5000, 20000]) expect(tokenizeForEval(tok, text, n).slice(0, n)).toEqual(full.slice(0, n));
  });
});
