// Cross-check of the model families against transformers, for a dev machine with torch + transformers (never CI):
// hf_models.py saves tiny random models of every family (all weights random, biases and norms included) with
// transformers' own save_pretrained and its logits; this loads each folder with perp and compares. Usage:
//   python scripts/xcheck/hf_models.py <out dir>     (a venv with torch >= 2 and transformers, see that file)
//   node --import tsx scripts/xcheck/hf-logits.mts <out dir>
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { generate } from "../../src/models/generate.js";
import { loadModel } from "../../src/models/load.js";
import { noGrad } from "../../src/nn/tape.js";

const root = process.argv[2];
if (!root) throw new Error("usage: hf-logits.mts <dir written by hf_models.py>");
let worst = 0;
let genDiffers = 0;
for (const name of readdirSync(root).sort()) {
  const dir = join(root, name);
  if (!existsSync(join(dir, "ref.json"))) continue;
  const ref = JSON.parse(readFileSync(join(dir, "ref.json"), "utf8")) as {
    ids: number[];
    logits: number[][];
    gen_prompt?: number[];
    gen?: number[];
  };
  const m = await loadModel(dir, { tokenizer: false });
  const T = ref.ids.length;
  const out = noGrad(() => m.model.forward(Int32Array.from(ref.ids), 1, T));
  const V = ref.logits[0].length;
  let maxAbs = 0;
  let scale = 0;
  for (let t = 0; t < T; t++)
    for (let v = 0; v < V; v++) {
      maxAbs = Math.max(maxAbs, Math.abs(out.data[t * V + v] - ref.logits[t][v]));
      scale = Math.max(scale, Math.abs(ref.logits[t][v]));
    }
  worst = Math.max(worst, maxAbs / scale);
  let gen = "";
  if (ref.gen && ref.gen_prompt) {
    const ours = [...generate(m.model, ref.gen_prompt, { maxNewTokens: ref.gen.length })];
    const same = JSON.stringify(ours) === JSON.stringify(ref.gen);
    if (!same) genDiffers++;
    gen = `, greedy ${ref.gen.length} tokens ${same ? "identical" : "DIFFER"}`;
  }
  console.log(`${name.padEnd(20)} max |Δlogit| ${maxAbs.toExponential(2)} (logits up to ${scale.toFixed(2)})${gen}`);
}
console.log(`worst relative difference ${worst.toExponential(2)}`);
if (worst > 1e-4 || genDiffers) process.exitCode = 1;
