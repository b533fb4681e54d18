// Cross-check of `perp retrain` against PyTorch on transformers' own model (retrain_hf_ref.py), for a dev machine
// with torch + transformers (never CI): dumps the initial trainable tensors (same options as the run), the masks and
// the batches the sampler draws, then runs the real retrainModel() into <work>/run. Usage:
//   node --import tsx scripts/xcheck/retrain-dump.mts <pruned dir> <work dir> [params] [lora type]
//   python scripts/xcheck/retrain_hf_ref.py <pruned dir> <work dir> [lora type]
import { mkdirSync, readFileSync } from "node:fs";
import { textSource } from "../../src/io/datasets.js";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { loadModel } from "../../src/models/load.js";
import { prunableLinears, setupTrainable } from "../../src/peft/select.js";
import { attachMasks, retrainModel } from "../../src/train/retrain-model.js";
import { WindowSampler } from "../../src/train/sampler.js";

const [dir, work] = [process.argv[2], process.argv[3]];
if (!dir || !work) throw new Error("usage: retrain-dump.mts <pruned dir> <work dir> [params] [lora type]");
const steps = 40,
  seqlen = 128,
  lr = 5e-4;
const [ptype, lt] = [process.argv[4] ?? "norm,lora", process.argv[5] ?? "mask_lora"];
const opts = { params: ptype.split(",") as never, loraType: lt as never, loraR: 16, loraAlpha: 32, seed: 0 };
mkdirSync(work, { recursive: true });
const m0 = await loadModel(dir);
attachMasks(m0, () => {});
const { params } = setupTrainable(m0.model, opts);
const t: { name: string; dtype: "F32"; shape: number[]; data: Float32Array }[] = [];
for (const [n, p] of params) t.push({ name: `init.${n}`, dtype: "F32", shape: p.shape, data: p.data.slice() });
for (const [n, l] of prunableLinears(m0.model))
  t.push({ name: `mask.${n}`, dtype: "F32", shape: l.weight.shape, data: Float32Array.from(l.mask as Uint8Array) });
const info = JSON.parse(readFileSync(`${dir}/perp.json`, "utf8"));
const exclude = info?.prune?.calibration?.documents;
const sampler = new WindowSampler(await textSource("c4"), m0.tokenizer!, seqlen, 0, exclude ?? []);
const ids = new Float32Array(steps * seqlen);
for (let s = 0; s < steps; s++) ids.set(Float32Array.from(sampler.batch(1)), s * seqlen);
t.push({ name: "ids", dtype: "F32", shape: [steps, seqlen], data: ids });
writeSafetensors(`${work}/init.safetensors`, t);
const m = await loadModel(dir);
const r = await retrainModel(m, { ...opts, steps, lr, seqlen, out: `${work}/run` } as never);
console.log(JSON.stringify({ loss_first10: r.loss_first10, loss_last10: r.loss_last10 }));
