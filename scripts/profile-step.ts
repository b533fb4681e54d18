// `node --import tsx scripts/profile-step.ts [full|peft] [--checkpoint]`: where one llama768 fwd+bwd step spends its
// time — every native kernel call is wrapped with a timer (GEMMs keyed by shape), the rest is JS. A dev tool.
import { LLAMA768 } from "../src/bench/engine.js";
import { LlamaForCausalLM } from "../src/models/llama.js";
import { loadModel } from "../src/models/load.js";
import * as F from "../src/nn/functional.js";
import { packFrozenWeights } from "../src/nn/packed.js";
import { backward, clearTape } from "../src/nn/tape.js";
import { configureTrainable } from "../src/peft/select.js";
import { Arena, withArena } from "../src/tensor/arena.js";
import { K } from "../src/tensor/native.js";
import { Rng } from "../src/tensor/rng.js";

const mode = process.argv[2] === "peft" ? "peft" : "full";
const checkpoint = process.argv.includes("--checkpoint");
const acc = new Map<string, { t: number; n: number; flops: number }>();
let on = false;
const Kany = K as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const name of Object.keys(Kany)) {
  const f = Kany[name];
  if (typeof f !== "function") continue;
  Kany[name] = (...a: unknown[]) => {
    if (!on) return f(...a);
    const t = performance.now();
    const r = f(...a);
    const dt = performance.now() - t;
    let key = name;
    let flops = 0;
    if (name === "gemm") {
      const [, , , M, N, Kd, tA, tB] = a as [unknown, unknown, unknown, number, number, number, boolean, boolean];
      key = `gemm ${M}x${N}x${Kd}${tA ? " tA" : ""}${tB ? " tB" : ""}`;
      flops = 2 * M * N * Kd;
    }
    const e = acc.get(key) ?? { t: 0, n: 0, flops: 0 };
    e.t += dt;
    e.n++;
    e.flops += flops;
    acc.set(key, e);
    return r;
  };
}

// MODEL_DIR=<folder>: profile that model (its vocabulary) instead of the random llama768.
const m = process.env.MODEL_DIR
  ? ((await loadModel(process.env.MODEL_DIR)).model as unknown as LlamaForCausalLM)
  : new LlamaForCausalLM(LLAMA768).initRandom(0);
configureTrainable(
  m,
  mode === "full"
    ? { params: ["full"] }
    : {
        params: (process.env.PARAMS ?? "norm,lora").split(",") as ["norm"],
        loraType: (process.env.LORA_TYPE ?? "lora") as "lora",
        loraR: 16,
        loraAlpha: 32,
      },
);
if (mode === "peft" && !process.argv.includes("--no-pack")) {
  const r = packFrozenWeights(m, "on");
  console.log(`packed ${r.weights} frozen weights (${(r.bytes / 2 ** 20).toFixed(0)} MB)`);
}
const rng = new Rng(0);
const T = 512;
const arena = new Arena();
const ids = Int32Array.from({ length: T }, () => rng.int(1000));
const tg = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
const step = () => {
  withArena(arena, () => backward(F.crossEntropy(m.forward(ids, 1, T, { checkpoint }), tg).loss));
  clearTape();
  m.zeroGrad();
};
step();
step();
const reps = 3;
on = true;
const t0 = performance.now();
for (let i = 0; i < reps; i++) step();
const total = (performance.now() - t0) / reps;
on = false;
const rows = [...acc.entries()].sort((a, b) => b[1].t - a[1].t);
let native = 0;
for (const [, e] of rows) native += e.t / reps;
console.log(
  `${mode}${checkpoint ? " +checkpoint" : ""}: step ${total.toFixed(0)} ms (${(T / (total / 1000)).toFixed(1)} tok/s), native ${native.toFixed(0)} ms, JS/other ${(total - native).toFixed(0)} ms`,
);
for (const [k, e] of rows) {
  const ms = e.t / reps;
  if (ms < (Number(process.env.PMIN) || 2)) continue;
  const gf = e.flops ? `  ${(e.flops / (e.t / 1000) / 1e9).toFixed(0)} GF/s` : "";
  console.log(`${ms.toFixed(1).padStart(8)} ms  ${String(e.n / reps).padStart(4)}×  ${k}${gf}`);
}
