// `npm run demo`: the main job, end to end on what perp does today — import the real stories260K llama2.c model into
// an HF folder, check its logits against PyTorch, and generate a story. (Pruning, retraining and the report join
// this demo as their issues land.)
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { dataPath, requireData } from "../src/io/data.js";
import { importLlama2c } from "../src/io/llama2c.js";
import { generate, nextLogits } from "../src/models/generate.js";
import { loadModel } from "../src/models/load.js";

const out = join("runs", "demo", "stories260K-hf");
const t0 = performance.now();
const model = requireData("models", "stories260K", "stories260K.bin");
const tok = requireData("models", "stories260K", "tok512.bin");
const cfg = importLlama2c(model, tok, out);
console.log(
  `imported ${model}\n  → ${out} (llama, ${cfg.num_hidden_layers} layers, hidden ${cfg.hidden_size}, vocab ${cfg.vocab_size})`,
);

const m = await loadModel(out);
const refPath = join(dataPath(), "..", "refs", "stories260k_logits.json");
if (existsSync(refPath)) {
  const ref = JSON.parse(readFileSync(refPath, "utf8"));
  const logits = nextLogits(m.model, ref.token_ids);
  const d = Math.max(...ref.final_logits_first16.map((v: number, i: number) => Math.abs(v - logits[i])));
  console.log(`logits vs PyTorch on "${ref.prompt}": max |Δ| = ${d.toExponential(2)} (tolerance 1e-4)`);
}
const tk = m.tokenizer!;
const prompt = tk.encode("Once upon a time");
const ids = [...generate(m.model, prompt, { maxNewTokens: 80, eosId: tk.eosId })];
console.log(`\ngreedy story:\n  ${tk.decode([...prompt, ...ids])}\n`);
console.log(`done in ${((performance.now() - t0) / 1000).toFixed(2)} s; model folder: ${out}`);
