// `npm run demo`: the main job — recipes/demo-stories260k.yaml on the real stories260K model (llama2.c, imported from
// $PERP_DATA, default ../shared/data): magnitude 50% → PERP retraining (norms + MaskLoRA) → WikiText-2 and
// TinyStories perplexity → a few zero-shot tasks with --limit → compressed export → report.html.
import { join } from "node:path";
import { loadRecipes } from "../src/recipe/load.js";
import { run } from "../src/recipe/run.js";

const [recipe] = loadRecipes(join("recipes", "demo-stories260k.yaml"));
const out = process.argv[2] ?? join("runs", "demo");
const t0 = performance.now();
const r = await run(recipe, { out, resume: true, progress: true, log: (s) => process.stderr.write(`${s}\n`) });
const ppl = r.perplexity as Record<string, Record<string, number>>;
const fmt = (v?: number) => (v === undefined ? "–" : v.toFixed(2));
console.log("\nperplexity        dense    pruned   retrained");
for (const d of Object.keys(ppl.dense ?? ppl.pruned ?? {}))
  console.log(
    `${d.padEnd(14)} ${fmt(ppl.dense?.[d]).padStart(8)} ${fmt(ppl.pruned?.[d]).padStart(9)} ${fmt(ppl.retrained?.[d]).padStart(11)}`,
  );
const t = r.retrain as Record<string, number> | null;
if (t)
  console.log(
    `\nretrained ${t.trainable_params} parameters (${t.trainable_pct.toFixed(2)}% of the model), loss ${t.loss_first10.toFixed(3)} → ${t.loss_last10.toFixed(3)}`,
  );
console.log(`\nreport: ${join(out, "report.html")}   (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
