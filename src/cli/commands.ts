// Command definitions (the single source of --help and the README's CLI reference).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { runEngineBench } from "../bench/engine.js";
import { evaluate } from "../eval/evaluate.js";
import { TASKS } from "../eval/tasks/index.js";
import { importLlama2c } from "../io/llama2c.js";
import { generate } from "../models/generate.js";
import { loadModel } from "../models/load.js";
import { LORA_TYPES } from "../nn/layers.js";
import { PACK_POLICIES, type PackPolicy } from "../nn/packed.js";
import { checkLoraType, parseSubsets, SUBSETS } from "../peft/select.js";
import { prune, savePruned } from "../prune/index.js";
import { inspect } from "../prune/inspect.js";
import { METHODS } from "../prune/methods.js";
import { loadRecipes } from "../recipe/load.js";
import { run } from "../recipe/run.js";
import { CHECKPOINT_POLICIES, type CheckpointPolicy } from "../train/loop.js";
import { retrainModel } from "../train/retrain-model.js";
import { type CommandDef, UsageError } from "./args.js";

function readVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    return pkg.version as string;
  } catch {
    return "0.0.0";
  }
}

export const VERSION = readVersion();

const bench: CommandDef = {
  name: "bench",
  summary: "Benchmark the engine on the llama768 config (sgemm, forward, forward+backward full and PEFT)",
  usage: "perp bench [--json] [--quick]",
  description:
    "Measures the machine's FMA peak, sgemm 4096³, and tokens/s of a 12-layer 768-wide LLaMA (GQA 12/4 heads,\n" +
    "SwiGLU 2048, vocab 32000) at batch 1x512. PERP_THREADS sets the thread count.",
  options: [
    { name: "json", type: "boolean", description: "print one JSON line instead of a table" },
    { name: "quick", type: "boolean", description: "small sizes (2 layers, sgemm 1024³) for a smoke run" },
  ],
  run(a) {
    const json = !!a.opts.json;
    const r = runEngineBench({ quick: !!a.opts.quick, log: json ? undefined : (m) => process.stderr.write(`${m}\n`) });
    if (json) process.stdout.write(`${JSON.stringify(r)}\n`);
    else for (const [k, v] of Object.entries(r)) process.stdout.write(`${k.padEnd(24)} ${v}\n`);
  },
};

const importCmd: CommandDef = {
  name: "import",
  summary: "Convert a llama2.c checkpoint + tokenizer into a Hugging Face LLaMA folder",
  usage: "perp import llama2c <model.bin> <tokenizer.bin> --out <dir>",
  description:
    "Reads a llama2.c checkpoint (run.c's legacy version 0, or export.py --version 1 float32 / --version 2 Q8_0,\n" +
    "dequantized to float32 exactly as runq.c reads it) and tokenizer.bin and writes config.json, model.safetensors,\n" +
    "tokenizer.json (an equivalent sentencepiece-BPE with byte fallback) and tokenizer_config.json. q/k rows are\n" +
    "permuted from llama2.c's interleaved RoPE pairs to HF's rotate-half layout, so the logits are unchanged.",
  positionals: [
    { name: "format", description: "source format (only 'llama2c')", required: true },
    { name: "model.bin", description: "llama2.c checkpoint", required: true },
    { name: "tokenizer.bin", description: "llama2.c tokenizer", required: true },
  ],
  options: [{ name: "out", type: "string", description: "output folder", required: true }],
  run(a) {
    const [format, model, tok] = a.positionals;
    if (format !== "llama2c") throw new UsageError(`perp import: unknown format '${format}' (supported: llama2c)`);
    if (!tok) throw new UsageError(`usage: ${importCmd.usage}`);
    const cfg = importLlama2c(model, tok, a.opts.out as string);
    process.stdout.write(
      `wrote ${a.opts.out}: llama, ${cfg.num_hidden_layers} layers, hidden ${cfg.hidden_size}, vocab ${cfg.vocab_size}\n`,
    );
  },
};

const generateCmd: CommandDef = {
  name: "generate",
  summary: "Generate text from a prompt (greedy or sampled), streaming tokens",
  usage: 'perp generate --model <id|dir> --prompt "..." [--max-new-tokens 64] [--temperature 0] [--seed 0]',
  options: [
    { name: "model", type: "string", description: "HF model id (cache/Hub) or local folder", required: true },
    { name: "prompt", type: "string", description: "prompt text", required: true },
    { name: "max-new-tokens", type: "number", description: "tokens to generate", default: 64 },
    {
      name: "temperature",
      type: "number",
      description: "0 = greedy; > 0 samples from softmax(logits / T)",
      default: 0,
    },
    { name: "seed", type: "number", description: "sampling seed", default: 0 },
    { name: "revision", type: "string", description: "Hub revision (branch, tag or commit)", default: "main" },
  ],
  async run(a) {
    const m = await loadModel(a.opts.model as string, { revision: a.opts.revision as string });
    if (!m.tokenizer) throw new Error(`${m.dir}: missing tokenizer.json`);
    const tok = m.tokenizer;
    const prompt = tok.encode(a.opts.prompt as string);
    process.stdout.write(a.opts.prompt as string);
    const out: number[] = [];
    let shown = "";
    for (const id of generate(m.model, prompt, {
      maxNewTokens: a.opts["max-new-tokens"] as number,
      temperature: a.opts.temperature as number,
      seed: a.opts.seed as number,
      eosId: tok.eosId,
    })) {
      out.push(id);
      const text = tok.decode([...prompt, ...out]);
      const full = tok.decode(prompt);
      const add = text.slice(full.length);
      if (add.length > shown.length) {
        process.stdout.write(add.slice(shown.length));
        shown = add;
      }
    }
    process.stdout.write("\n");
  },
};

const list = (v: unknown) =>
  typeof v === "string" && v.trim()
    ? v
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean)
    : [];

const evalCmd: CommandDef = {
  name: "eval",
  summary: "Perplexity (HF protocol) and zero-shot multiple-choice tasks (lm-eval semantics)",
  usage:
    "perp eval --model <id|dir> [--ppl wikitext2,c4,tinystories | --text-file F] [--seqlen L] [--max-tokens N]\n" +
    "          [--tasks boolq,rte,...] [--limit N] [--bos tokenizer|none] [--json]",
  description:
    "Perplexity: the whole text is tokenized once (BOS as the tokenizer adds it), cut into non-overlapping windows of\n" +
    "the model's context (max_position_embeddings, capped at 4096, or --seqlen); the tail is dropped; ppl = exp(mean\n" +
    "next-token NLL). wikitext2 = the HF '\\n\\n'-joined raw test split; c4 = ' '.join(first 1100 validation documents),\n" +
    "first 256 windows (SparseGPT/PERP). Data resolves under PERP_DATA (default ../shared/data).\n" +
    `Tasks: ${Object.keys(TASKS).join(", ")} — lm-eval prompts, acc and acc_norm (log-likelihood / choice length).`,
  options: [
    { name: "model", type: "string", description: "HF model id (cache/Hub) or local folder", required: true },
    { name: "ppl", type: "string", description: "comma list of datasets: wikitext2, c4, tinystories" },
    { name: "text-file", type: "string", description: "perplexity of any UTF-8 text file" },
    { name: "seqlen", type: "number", description: "window length (default: the model's context, capped at 4096)" },
    { name: "max-tokens", type: "number", description: "evaluate only the first N tokens of the tokenized text" },
    { name: "tasks", type: "string", description: "comma list of zero-shot tasks" },
    { name: "limit", type: "number", description: "only the first N documents of each task" },
    {
      name: "bos",
      type: "string",
      description: "task tokenization: 'tokenizer' (current lm-eval) or 'none' (lm-eval <= 0.4.3)",
      default: "tokenizer",
    },
    { name: "json", type: "boolean", description: "print one JSON object" },
    { name: "revision", type: "string", description: "Hub revision", default: "main" },
  ],
  async run(a) {
    const ppl = list(a.opts.ppl);
    const tasks = list(a.opts.tasks);
    if (!ppl.length && !tasks.length && !a.opts["text-file"])
      throw new UsageError("perp eval: nothing to evaluate (give --ppl, --text-file and/or --tasks)");
    if (a.opts.bos !== "tokenizer" && a.opts.bos !== "none")
      throw new UsageError("perp eval: --bos must be 'tokenizer' or 'none'");
    const m = await loadModel(a.opts.model as string, { revision: a.opts.revision as string });
    if (!m.tokenizer) throw new Error(`${m.dir}: missing tokenizer.json`);
    const r = await evaluate(m.model, m.tokenizer, {
      ppl,
      textFile: a.opts["text-file"] as string | undefined,
      seqlen: a.opts.seqlen as number | undefined,
      maxTokens: a.opts["max-tokens"] as number | undefined,
      tasks,
      limit: a.opts.limit as number | undefined,
      bos: a.opts.bos as "tokenizer" | "none",
      progress: true,
    });
    const { perplexity_details, ...rest } = r;
    if (a.opts.json) {
      process.stdout.write(`${JSON.stringify({ model: a.opts.model, ...rest, perplexity_details })}\n`);
      return;
    }
    for (const [k, v] of Object.entries(r.perplexity))
      process.stdout.write(
        `${k.padEnd(14)} ppl ${v.toFixed(4)}  (${perplexity_details[k].windows} windows x ${perplexity_details[k].seqlen}, ${perplexity_details[k].tokensPerS.toFixed(0)} tok/s)\n`,
      );
    for (const [k, v] of Object.entries(r.tasks))
      process.stdout.write(
        `${k.padEnd(14)} acc ${v.acc.toFixed(4)} ± ${v.acc_stderr.toFixed(4)}${v.acc_norm !== undefined ? `  acc_norm ${v.acc_norm.toFixed(4)} ± ${(v.acc_norm_stderr ?? 0).toFixed(4)}` : ""}  (n=${v.n}, ${v.seconds.toFixed(1)} s)\n`,
      );
    process.stdout.write(`total ${r.seconds.toFixed(1)} s\n`);
  },
};

const pruneCmd: CommandDef = {
  name: "prune",
  summary: "Prune every linear layer of the decoder blocks (magnitude, random, Wanda, SparseGPT)",
  usage:
    "perp prune --model <id|dir> --method magnitude|random|wanda|sparsegpt --sparsity 0.5 [--pattern 2:4]\n" +
    "           [--scope matrix|row] [--calib-samples 128 --calib-seqlen 512 --calib-dataset c4 --seed 0] --out <dir>",
  description:
    "Embeddings and the LM head are never pruned. Scores are compared per matrix (magnitude, random: PERP), per output\n" +
    "row (wanda), or per 128-column block (sparsegpt); --scope overrides; --pattern N:M keeps N of every M consecutive\n" +
    "inputs. Wanda and SparseGPT calibrate sequentially, block by block, on random windows of C4 documents, drawn as\n" +
    "their reference code draws them (Python's random.seed(--seed), randint: the same windows from the same documents).\n" +
    "A continuous text (wikitext2, tinystories, a .txt file) is tokenized whole and windows start anywhere in it, as\n" +
    "their get_wikitext2 draws them (the shipped WikiText-2 is the test split, the text --ppl wikitext2 measures).\n" +
    "The output folder holds the HF model with exact zeros (transformers loads it), perp.json (settings, per-layer\n" +
    "sparsity, timings) and perp-masks.safetensors (the masks as bitmaps).",
  options: [
    { name: "model", type: "string", description: "HF model id (cache/Hub) or local folder", required: true },
    { name: "method", type: "string", description: `one of ${Object.keys(METHODS).join(", ")}`, required: true },
    { name: "sparsity", type: "number", description: "fraction of weights set to zero, in [0, 1)", default: 0.5 },
    { name: "pattern", type: "string", description: "unstructured, or N:M such as 2:4 / 4:8", default: "unstructured" },
    { name: "scope", type: "string", description: "comparison group: matrix or row (default: the method's)" },
    { name: "calib-samples", type: "number", description: "calibration windows", default: 128 },
    {
      name: "calib-seqlen",
      type: "number",
      description: "tokens per window (default: the model's context, capped at 2048)",
    },
    {
      name: "calib-dataset",
      type: "string",
      description: "c4, wikitext2, tinystories, or a .txt/.jsonl/.parquet file",
      default: "c4",
    },
    { name: "seed", type: "number", description: "seed of calibration sampling and random pruning", default: 0 },
    { name: "out", type: "string", description: "output folder (must not exist or be empty)", required: true },
    { name: "json", type: "boolean", description: "print the report as one JSON line" },
  ],
  async run(a) {
    const m = await loadModel(a.opts.model as string);
    const { report, masks } = await prune(m, {
      method: a.opts.method as string,
      sparsity: a.opts.sparsity as number,
      pattern: a.opts.pattern as string,
      scope: a.opts.scope as "matrix" | "row" | undefined,
      calibSamples: a.opts["calib-samples"] as number,
      calibSeqlen: a.opts["calib-seqlen"] as number | undefined,
      calibDataset: a.opts["calib-dataset"] as string,
      seed: a.opts.seed as number,
      progress: true,
    });
    savePruned(a.opts.out as string, m, report, masks);
    if (a.opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else
      process.stdout.write(
        `pruned ${report.layers.length} linears with ${report.method} (${report.pattern}, scope ${report.scope}): sparsity ${report.sparsity.toFixed(4)} in ${(report.seconds.prune + report.seconds.calibration_data).toFixed(1)} s → ${a.opts.out}\n`,
      );
  },
};

const inspectCmd: CommandDef = {
  name: "inspect",
  summary: "Per-layer and overall sparsity, N:M validity and parameter counts of a model folder",
  usage: "perp inspect <dir|id> [--json]",
  positionals: [{ name: "dir", description: "model folder or HF id", required: true }],
  options: [{ name: "json", type: "boolean", description: "print one JSON object" }],
  async run(a) {
    const r = await inspect(a.positionals[0]);
    if (a.opts.json) {
      const { perp: _p, ...rest } = r;
      process.stdout.write(`${JSON.stringify(rest)}\n`);
      return;
    }
    for (const l of r.layers)
      process.stdout.write(
        `${l.name.padEnd(44)} [${l.shape.join("x")}]`.padEnd(60) +
          ` sparsity ${l.sparsity.toFixed(4)}${l.nm ? `  ${l.nm}` : ""}${l.masked === false ? "  MASK VIOLATED" : ""}\n`,
      );
    process.stdout.write(
      `overall sparsity ${r.sparsity.toFixed(4)} over ${r.parameters.prunable} prunable weights; ${r.parameters.total} parameters in total${r.masks ? `; saved masks ${r.masks_hold ? "hold" : "VIOLATED"}` : ""}\n`,
    );
  },
};

const retrainCmd: CommandDef = {
  name: "retrain",
  summary: "Retrain a tiny parameter subset of a pruned model with its masks kept (PERP), then merge and export",
  usage:
    "perp retrain --model <pruned dir> --params norm,bias,lora --lora-type mask_lora [--lora-r 16 --lora-alpha 32]\n" +
    "             --steps N --lr 5e-4 [--batch 1 --grad-accum 2 --warmup 0.1 --seqlen L --seed 0] --out <dir> [--resume]",
  description:
    `Subsets (combinable): ${SUBSETS.join(", ")}. LoRA types: ${LORA_TYPES.join(", ")} — lora merges W + s·BA (dense!),\n` +
    "lora_prune merges W + s·(BA ⊙ M), mask_lora trains and merges W + s·(BA ⊙ M), scale_lora computes W ⊙ BA; all but\n" +
    "plain lora keep every pruned weight exactly 0.0. bias creates zero biases where the family has none (the config\n" +
    "then declares them; a Mistral or Qwen2 model, whose transformers class has no biases or only q/k/v ones, is\n" +
    "exported as LLaMA, and refused when a sliding window is shorter than its context; Qwen3, Phi-3 and Gemma are\n" +
    "refused). Data: C4 windows of the model's context (calibration documents excluded); from a continuous text\n" +
    "(wikitext2, tinystories, .txt) windows start anywhere in its token stream. AdamW (0.9/0.999, eps 1e-8), linear\n" +
    "schedule with warmup, per-block gradient checkpointing when the activations would need over a quarter of the\n" +
    "memory (--grad-checkpoint; same numbers either way); the loss is logged to <out>/log.jsonl and checkpoints land\n" +
    "in <out>/checkpoints; --resume continues from the last one.\n" +
    "--mode reconstruct (PERP's): block by block, --steps optimizer steps train the block's subset so that it\n" +
    "reproduces the dense block (--dense) on the same inputs, the pruned model's own activations on the calibration\n" +
    "windows (MSE); the block is merged and its outputs feed the next; per-block MSE before/after is reported. Each\n" +
    "finished block is checkpointed: --resume loads the finished blocks and goes on from the next (same result).",
  options: [
    { name: "model", type: "string", description: "pruned model folder (or any HF model)", required: true },
    { name: "params", type: "string", description: "comma list of subsets", default: "norm,lora" },
    { name: "lora-type", type: "string", description: LORA_TYPES.join(" | "), default: "mask_lora" },
    { name: "lora-r", type: "number", description: "LoRA rank", default: 16 },
    { name: "lora-alpha", type: "number", description: "LoRA alpha (scale = alpha / r)", default: 32 },
    { name: "steps", type: "number", description: "optimizer steps", required: true },
    { name: "lr", type: "number", description: "peak learning rate", default: 5e-4 },
    { name: "batch", type: "number", description: "windows per micro-batch", default: 1 },
    { name: "grad-accum", type: "number", description: "micro-batches per optimizer step", default: 1 },
    { name: "warmup", type: "number", description: "warmup fraction of the steps", default: 0.1 },
    { name: "weight-decay", type: "number", description: "AdamW weight decay", default: 0 },
    {
      name: "clip",
      type: "number",
      description: "gradient-norm clipping (0 = off; PERP's code, through transformers' Trainer, clips at 1)",
      default: 0,
    },
    { name: "seqlen", type: "number", description: "window length (default: the model's context, capped at 2048)" },
    { name: "seed", type: "number", description: "data sampling and LoRA init seed", default: 0 },
    {
      name: "dataset",
      type: "string",
      description: "c4, wikitext2, tinystories, or a .txt/.jsonl/.parquet file",
      default: "c4",
    },
    {
      name: "mode",
      type: "string",
      description:
        "retrain (next-token loss on C4) or reconstruct (per-block MSE vs the dense block; --steps per block)",
      default: "retrain",
    },
    { name: "dense", type: "string", description: "reconstruct: the dense model (default: perp.json's source_model)" },
    { name: "calib-samples", type: "number", description: "reconstruct: calibration windows", default: 128 },
    { name: "checkpoint-every", type: "number", description: "checkpoint every K steps (default: steps/10)" },
    {
      name: "grad-checkpoint",
      type: "string",
      description: "per-block gradient checkpointing: auto (on when activations need > 1/4 of RAM), on, off",
      default: "auto",
    },
    {
      name: "pack-frozen",
      type: "string",
      description:
        "pack frozen weights once for the GEMM (norm/bias/lora/lora_prune subsets): auto (when the copies fit), on, off",
      default: "auto",
    },
    { name: "out", type: "string", description: "output folder (merged HF model, log, checkpoints)", required: true },
    { name: "resume", type: "boolean", description: "continue from the last checkpoint in --out" },
    { name: "json", type: "boolean", description: "print the summary as one JSON line" },
  ],
  async run(a) {
    if (a.opts.mode !== "retrain" && a.opts.mode !== "reconstruct")
      throw new UsageError(`perp retrain: --mode must be retrain or reconstruct (got ${a.opts.mode})`);
    const gc = a.opts["grad-checkpoint"] as CheckpointPolicy;
    if (!CHECKPOINT_POLICIES.includes(gc))
      throw new UsageError(`perp retrain: --grad-checkpoint must be ${CHECKPOINT_POLICIES.join(", ")} (got ${gc})`);
    const pf = a.opts["pack-frozen"] as PackPolicy;
    if (!PACK_POLICIES.includes(pf))
      throw new UsageError(`perp retrain: --pack-frozen must be ${PACK_POLICIES.join(", ")} (got ${pf})`);
    const params = parseSubsets(a.opts.params as string);
    const loraType = checkLoraType(a.opts["lora-type"] as string);
    const m = await loadModel(a.opts.model as string);
    const r = await retrainModel(
      m,
      {
        params,
        loraType,
        loraR: a.opts["lora-r"] as number,
        loraAlpha: a.opts["lora-alpha"] as number,
        steps: a.opts.steps as number,
        lr: a.opts.lr as number,
        batch: a.opts.batch as number,
        gradAccum: a.opts["grad-accum"] as number,
        warmup: a.opts.warmup as number,
        weightDecay: a.opts["weight-decay"] as number,
        clip: a.opts.clip as number,
        seqlen: a.opts.seqlen as number | undefined,
        seed: a.opts.seed as number,
        dataset: a.opts.dataset as string,
        checkpointEvery: a.opts["checkpoint-every"] as number | undefined,
        gradientCheckpointing: gc,
        packFrozen: pf,
        mode: a.opts.mode as "retrain" | "reconstruct",
        dense: a.opts.dense as string | undefined,
        calibSamples: a.opts["calib-samples"] as number,
        out: a.opts.out as string,
        resume: !!a.opts.resume,
        progress: true,
      },
      (s) => process.stderr.write(`${s}\n`),
    );
    const { warnings: _w, masks: _m, densified: _d, resumed_from: _r, ...summary } = r;
    if (r.blocks && !a.opts.json)
      for (const b of r.blocks)
        process.stdout.write(
          `block ${b.block}: reconstruction MSE ${b.mse_before.toExponential(3)} → ${b.mse_after.toExponential(3)}\n`,
        );
    if (r.reconstruction_error_initial !== undefined && !a.opts.json)
      process.stdout.write(
        `reconstruction error, summed over blocks: ${r.reconstruction_error_initial.toExponential(3)} → ${(r.reconstruction_error_final as number).toExponential(3)}\n`,
      );
    if (a.opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else
      process.stdout.write(
        `trained ${r.trainable_params} parameters (${r.trainable_pct.toFixed(3)}% of the model) for ${r.steps} steps${r.blocks ? " per block" : ""} in ${r.seconds.toFixed(1)} s (${r.tokens_per_s.toFixed(0)} tok/s)${r.blocks ? "" : `: loss ${r.loss_first10.toFixed(4)} → ${r.loss_last10.toFixed(4)}`}; sparsity ${r.sparsity_before.toFixed(4)} → ${r.sparsity_after.toFixed(4)}; peak RSS ${r.peak_rss_mb} MB → ${a.opts.out}\n`,
      );
  },
};

const runCmd: CommandDef = {
  name: "run",
  summary: "Run a recipe: prune → retrain → merge → evaluate → export, into a resumable run directory",
  usage: "perp run <recipe.yaml> [--out runs/<name>] [--resume] [--set key.path=value,...] [--json]",
  description:
    "The run directory holds recipe.resolved.json, log.jsonl, stages/*.json (one per completed stage), the pruned\n" +
    "model, the retrained model (model/: HF folder with exact zeros, checkpoints, loss log), export-compressed/\n" +
    "(compressed-tensors), results.json and report.html. A killed run continues with --resume; a finished run is not\n" +
    "redone. A list value for a scalar key sweeps: every combination becomes its own run. See README for the keys.",
  positionals: [{ name: "recipe.yaml", description: "recipe file", required: true }],
  options: [
    { name: "out", type: "string", description: "run directory (default runs/<name>)" },
    { name: "resume", type: "boolean", description: "continue an unfinished run" },
    {
      name: "set",
      type: "string",
      description: "comma list of overrides, e.g. prune.goal_sparsity=0.6,retrain.lora_r=8",
    },
    { name: "json", type: "boolean", description: "print results.json as one line" },
  ],
  async run(a) {
    const overrides = typeof a.opts.set === "string" ? (a.opts.set as string).split(",").filter(Boolean) : [];
    const recipes = loadRecipes(a.positionals[0], overrides);
    for (const r of recipes) {
      const out =
        recipes.length > 1 || !a.opts.out
          ? join((a.opts.out as string) ?? "runs", recipes.length > 1 || !a.opts.out ? r.name : "")
          : (a.opts.out as string);
      const res = await run(r, {
        out,
        resume: !!a.opts.resume,
        progress: true,
        log: (s) => process.stderr.write(`${s}\n`),
      });
      if (a.opts.json) process.stdout.write(`${JSON.stringify(res)}\n`);
      else process.stdout.write(`run ${r.name}: report at ${join(out, "report.html")}\n`);
    }
  },
};

export const COMMANDS: CommandDef[] = [
  importCmd,
  generateCmd,
  evalCmd,
  pruneCmd,
  inspectCmd,
  retrainCmd,
  runCmd,
  bench,
];
