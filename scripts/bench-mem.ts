// `npm run bench:train`: one llama768 retraining step as `perp retrain` runs it (1x512 tokens, AdamW, gradient
// checkpointing as its default `--grad-checkpoint auto` decides), full vs PEFT (norms + LoRA r=16), each in a fresh
// process (three rounds, alternating): median time of steps 2–4 and peak RSS (PEFT keeps no gradients or Adam
// moments for the frozen weights). The same with checkpointing forced on (`train_ckpt_*`), the setting for models
// whose activations do not fit. Prints one JSON line.

import { execFileSync } from "node:child_process";
import { LLAMA768 } from "../src/bench/engine.js";
import { LlamaForCausalLM } from "../src/models/llama.js";
import * as F from "../src/nn/functional.js";
import { AdamW } from "../src/nn/optim.js";
import { packFrozenWeights } from "../src/nn/packed.js";
import { backward, clearTape } from "../src/nn/tape.js";
import { configureTrainable } from "../src/peft/select.js";
import { Arena, withArena } from "../src/tensor/arena.js";
import { Rng } from "../src/tensor/rng.js";
import { type CheckpointPolicy, useCheckpointing } from "../src/train/loop.js";

const T = 512;
const mode = process.argv[2];
const policy = (process.argv[3] ?? "auto") as CheckpointPolicy;
if (mode !== "full" && mode !== "peft") {
  type Run = { step_s: number; peak_rss_mb: number; trainable: number; checkpoint: boolean };
  const run = (m: string, p: CheckpointPolicy): Run =>
    JSON.parse(execFileSync(process.execPath, ["--import", "tsx", "scripts/bench-mem.ts", m, p], { encoding: "utf8" }));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  // Three rounds, full and PEFT processes in turn: the shared VM drifts, and alternating puts both through the
  // same conditions. Median step time per mode; peak RSS is the largest seen.
  const rounds = 3;
  const out: Record<string, number | boolean> = {};
  for (const [p, prefix] of [
    ["auto", "train"],
    ["on", "train_ckpt"],
  ] as const) {
    const res: Record<"full" | "peft", Run[]> = { full: [], peft: [] };
    for (let r = 0; r < rounds; r++) for (const m of ["full", "peft"] as const) res[m].push(run(m, p));
    const step = (m: "full" | "peft") => med(res[m].map((x) => x.step_s));
    const peak = (m: "full" | "peft") => Math.max(...res[m].map((x) => x.peak_rss_mb));
    Object.assign(out, {
      [`${prefix}_step_full_tok_s`]: +(T / step("full")).toFixed(1),
      [`${prefix}_step_peft_tok_s`]: +(T / step("peft")).toFixed(1),
      [`${prefix}_peft_over_full`]: +(step("full") / step("peft")).toFixed(3),
      [`${prefix}_peak_rss_full_mb`]: peak("full"),
      [`${prefix}_peak_rss_peft_mb`]: peak("peft"),
    });
    if (p === "auto") {
      out.train_grad_checkpoint = res.full[0].checkpoint;
      out.trainable_full = res.full[0].trainable;
      out.trainable_peft = res.peft[0].trainable;
    }
  }
  console.log(JSON.stringify({ ...out, train_rounds: rounds }));
  process.exit(0);
}
const m = new LlamaForCausalLM(LLAMA768).initRandom(0);
const params = configureTrainable(
  m,
  mode === "full" ? { params: ["full"] } : { params: ["norm", "lora"], loraType: "lora", loraR: 16, loraAlpha: 32 },
);
const checkpoint = useCheckpointing(policy, m, 1, T);
packFrozenWeights(m, "auto"); // as the retraining loop does (a no-op for full retraining: nothing is frozen)
const opt = new AdamW(params, { lr: 1e-4 });
const rng = new Rng(0);
const arena = new Arena();
const before = process.resourceUsage().maxRSS / 1024;
const times: number[] = [];
for (let s = 0; s < 4; s++) {
  const t0 = performance.now();
  const ids = Int32Array.from({ length: T }, () => rng.int(32000));
  const tg = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
  opt.zeroGrad();
  withArena(arena, () => backward(F.crossEntropy(m.forward(ids, 1, T, { checkpoint }), tg).loss));
  clearTape();
  opt.update();
  times.push((performance.now() - t0) / 1000);
}
const warm = times.slice(1).sort((a, b) => a - b)[1];
console.log(
  JSON.stringify({
    mode,
    checkpoint,
    trainable: params.reduce((a, [, p]) => a + p.size, 0),
    rss_after_init_mb: Math.round(before),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    step_s: +warm.toFixed(3),
  }),
);
