// `npm run bench:train`: one llama768 retraining step as `perp retrain` runs it (1x512 tokens, per-block gradient
// checkpointing, AdamW), full vs PEFT (norms + LoRA r=16), each in a fresh process (three rounds, alternating):
// median time of steps 2–4 and peak RSS (PEFT keeps no gradients or Adam moments for the frozen weights). Prints one JSON line.
import { execFileSync } from "node:child_process";
import { LLAMA768 } from "../src/bench/engine.js";
import { LlamaForCausalLM } from "../src/models/llama.js";
import * as F from "../src/nn/functional.js";
import { AdamW } from "../src/nn/optim.js";
import { backward, clearTape } from "../src/nn/tape.js";
import { configureTrainable } from "../src/peft/select.js";
import { Arena, withArena } from "../src/tensor/arena.js";
import { Rng } from "../src/tensor/rng.js";

const mode = process.argv[2];
if (mode !== "full" && mode !== "peft") {
  const run = (m: string) =>
    JSON.parse(execFileSync(process.execPath, ["--import", "tsx", "scripts/bench-mem.ts", m], { encoding: "utf8" }));
  // Three rounds, full and PEFT processes in turn: the shared VM drifts, and alternating puts both through the
  // same conditions. Median step time per mode; peak RSS is the largest seen.
  const rounds = 3;
  const res: Record<"full" | "peft", { step_s: number; peak_rss_mb: number; trainable: number }[]> = {
    full: [],
    peft: [],
  };
  for (let r = 0; r < rounds; r++) for (const m of ["full", "peft"] as const) res[m].push(run(m));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const full = { step_s: med(res.full.map((x) => x.step_s)), peak: Math.max(...res.full.map((x) => x.peak_rss_mb)) };
  const peft = { step_s: med(res.peft.map((x) => x.step_s)), peak: Math.max(...res.peft.map((x) => x.peak_rss_mb)) };
  console.log(
    JSON.stringify({
      train_step_full_tok_s: +(512 / full.step_s).toFixed(1),
      train_step_peft_tok_s: +(512 / peft.step_s).toFixed(1),
      train_peft_over_full: +(full.step_s / peft.step_s).toFixed(3),
      train_peak_rss_full_mb: full.peak,
      train_peak_rss_peft_mb: peft.peak,
      trainable_full: res.full[0].trainable,
      trainable_peft: res.peft[0].trainable,
      train_rounds: rounds,
    }),
  );
  process.exit(0);
}
const m = new LlamaForCausalLM(LLAMA768).initRandom(0);
const params = configureTrainable(
  m,
  mode === "full" ? { params: ["full"] } : { params: ["norm", "lora"], loraType: "lora", loraR: 16, loraAlpha: 32 },
);
const opt = new AdamW(params, { lr: 1e-4 });
const rng = new Rng(0);
const T = 512;
const arena = new Arena();
const before = process.resourceUsage().maxRSS / 1024;
const times: number[] = [];
for (let s = 0; s < 4; s++) {
  const t0 = performance.now();
  const ids = Int32Array.from({ length: T }, () => rng.int(32000));
  const tg = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
  opt.zeroGrad();
  withArena(arena, () => backward(F.crossEntropy(m.forward(ids, 1, T, { checkpoint: true }), tg).loss));
  clearTape();
  opt.update();
  times.push((performance.now() - t0) / 1000);
}
const warm = times.slice(1).sort((a, b) => a - b)[1];
console.log(
  JSON.stringify({
    mode,
    trainable: params.reduce((a, [, p]) => a + p.size, 0),
    rss_after_init_mb: Math.round(before),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    step_s: +warm.toFixed(3),
  }),
);
