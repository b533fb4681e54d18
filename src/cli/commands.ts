// Command definitions (the single source of --help and the README's CLI reference).
import { readFileSync } from "node:fs";
import { runEngineBench } from "../bench/engine.js";
import { importLlama2c } from "../io/llama2c.js";
import { generate } from "../models/generate.js";
import { loadModel } from "../models/load.js";
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
    "Reads a llama2.c (run.c, version 0) checkpoint and tokenizer.bin and writes config.json, model.safetensors,\n" +
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

export const COMMANDS: CommandDef[] = [importCmd, generateCmd, bench];
