// `node --import tsx scripts/profile-step.ts [full|peft|both] [--checkpoint] [--no-pack]`: where one llama768 fwd+bwd
// step spends its time — every native kernel call is wrapped with a timer (GEMMs keyed by shape, a second product's
// k2 columns counted), the rest is JS. `both`: a full and a PEFT instance stepped in turn in one process (ROUNDS
// rounds, default 6), one table with each kernel's time and GEMM rate in either step, so the two are compared under
// the same conditions of a drifting VM. A dev tool.
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

type Mode = "full" | "peft";
const arg = process.argv[2];
const modes: Mode[] = arg === "both" ? ["full", "peft"] : [arg === "peft" ? "peft" : "full"];
const checkpoint = process.argv.includes("--checkpoint");
interface Acc {
  t: number;
  n: number;
  flops: number;
}
const acc: Record<Mode, Map<string, Acc>> = { full: new Map(), peft: new Map() };
let on: Mode | null = null;
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
      const [M, N, Kd, tA, tB] = a.slice(3, 8) as [number, number, number, boolean, boolean];
      const K2 = (a[16] as number | undefined) ?? 0;
      key = `gemm ${M}x${N}x${Kd}${tA ? " tA" : ""}${tB ? " tB" : ""}`;
      flops = 2 * M * N * (Kd + K2);
    }
    const e = acc[on].get(key) ?? { t: 0, n: 0, flops: 0 };
    e.t += dt;
    e.n++;
    e.flops += flops;
    acc[on].set(key, e);
    return r;
  };
}

const rng = new Rng(0);
const T = 512;
const ids = Int32Array.from({ length: T }, () => rng.int(1000));
const tg = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));

// MODEL_DIR=<folder>: profile that model (its vocabulary) instead of the random llama768.
async function stepper(mode: Mode): Promise<() => void> {
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
  const arena = new Arena();
  return () => {
    withArena(arena, () => backward(F.crossEntropy(m.forward(ids, 1, T, { checkpoint }), tg).loss));
    clearTape();
    m.zeroGrad();
  };
}

const steps = await Promise.all(modes.map(stepper));
for (let i = 0; i < 2; i++) for (const s of steps) s();
const reps = Number(process.env.ROUNDS) || (modes.length > 1 ? 6 : 3);
const total: Record<Mode, number> = { full: 0, peft: 0 };
for (let i = 0; i < reps; i++)
  modes.forEach((mode, j) => {
    on = mode;
    const t0 = performance.now();
    steps[j]();
    total[mode] += (performance.now() - t0) / reps;
    on = null;
  });

const minMs = Number(process.env.PMIN) || 2;
const gf = (e: Acc | undefined) => (e?.flops ? `${(e.flops / (e.t / 1000) / 1e9).toFixed(0)} GF/s` : "");
for (const mode of modes) {
  let native = 0;
  for (const [, e] of acc[mode]) native += e.t / reps;
  const t = total[mode];
  console.log(
    `${mode}${checkpoint ? " +checkpoint" : ""}: step ${t.toFixed(0)} ms (${(T / (t / 1000)).toFixed(1)} tok/s), native ${native.toFixed(0)} ms, JS/other ${(t - native).toFixed(0)} ms`,
  );
}
if (modes.length === 1) {
  const rows = [...acc[modes[0]].entries()].sort((a, b) => b[1].t - a[1].t);
  for (const [k, e] of rows) {
    const ms = e.t / reps;
    if (ms >= minMs) console.log(`${ms.toFixed(1).padStart(8)} ms  ${String(e.n / reps).padStart(4)}×  ${k}  ${gf(e)}`);
  }
} else {
  console.log(`full ÷ peft: ${(total.full / total.peft).toFixed(3)}`);
  const keys = [...new Set([...acc.full.keys(), ...acc.peft.keys()])];
  const ms = (e: Acc | undefined) => (e ? e.t / reps : 0);
  keys.sort(
    (a, b) => Math.max(ms(acc.full.get(b)), ms(acc.peft.get(b))) - Math.max(ms(acc.full.get(a)), ms(acc.peft.get(a))),
  );
  console.log(`${"kernel".padEnd(28)} ${"full".padStart(22)} ${"PEFT".padStart(22)}`);
  const cell = (e: Acc | undefined) =>
    e ? `${ms(e).toFixed(1).padStart(7)} ms ${String(e.n / reps).padStart(3)}× ${gf(e).padStart(8)}` : "".padStart(22);
  for (const k of keys) {
    const [f, p] = [acc.full.get(k), acc.peft.get(k)];
    if (Math.max(ms(f), ms(p)) >= minMs) console.log(`${k.padEnd(28)} ${cell(f)} ${cell(p)}`);
  }
}
