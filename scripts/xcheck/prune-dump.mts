// Cross-check of Wanda and SparseGPT against the reference algorithms (prune_ref.py: locuslab/wanda's prune_wanda and
// IST-DASLab/sparsegpt's llama_sequential + fasterprune, in PyTorch), on the same model and the same calibration
// windows. A dev check that needs torch + transformers (never CI). Usage:
//   node --import tsx scripts/xcheck/prune-dump.mts <llama dir> <work dir> [samples] [seqlen]
//   python scripts/xcheck/prune_ref.py <llama dir> <work dir>
// Writes <work>/calib.json (the token windows perp draws) and <work>/<method>-<pattern>/ (perp's pruned folders).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadModel } from "../../src/models/load.js";
import { calibrationWindows } from "../../src/prune/calibration.js";
import { prune, savePruned } from "../../src/prune/index.js";

const [dir, work] = [process.argv[2], process.argv[3]];
if (!dir || !work) throw new Error("usage: prune-dump.mts <llama dir> <work dir> [samples] [seqlen]");
const samples = Number(process.argv[4] ?? 32);
const seqlen = Number(process.argv[5] ?? 256);
mkdirSync(work, { recursive: true });
const m0 = await loadModel(dir);
if (!m0.tokenizer) throw new Error(`${dir} has no tokenizer.json`);
const cal = await calibrationWindows(m0.tokenizer, { samples, seqlen, seed: 0, source: "c4" });
writeFileSync(join(work, "calib.json"), JSON.stringify({ samples, seqlen, ids: Array.from(cal.ids) }));
for (const method of ["wanda", "sparsegpt"])
  for (const pattern of ["unstructured", "2:4", "4:8"]) {
    const m = await loadModel(dir);
    let r: Awaited<ReturnType<typeof prune>>;
    try {
      r = await prune(m, { method, sparsity: 0.5, pattern, calibSamples: samples, calibSeqlen: seqlen, seed: 0 });
    } catch (e) {
      console.log(`${method} ${pattern}: ${(e as Error).message} (skipped)`); // e.g. 4:8 on a 172-wide input
      continue;
    }
    const { report, masks } = r;
    const out = join(work, `${method}-${pattern.replace(":", "of")}`);
    savePruned(out, m, report, masks);
    console.log(`${method} ${pattern}: sparsity ${report.sparsity.toFixed(4)} -> ${out}`);
  }
