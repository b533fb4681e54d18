// Command definitions (the single source of --help and the README's CLI reference).
import { readFileSync } from "node:fs";
import { runEngineBench } from "../bench/engine.js";
import type { CommandDef } from "./args.js";

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

export const COMMANDS: CommandDef[] = [bench];
