// `node --import tsx scripts/bench-load.ts [--gb 1]`: time and peak RSS of loading stories260K and a ~1 GB random
// LLaMA checkpoint (F32 weights are zero-copy views over the copy-on-write file mapping). A benchmark, not a test.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dataPath } from "../src/io/data.js";
import { importLlama2c } from "../src/io/llama2c.js";
import { saveCheckpoint } from "../src/io/safetensors.js";
import { nextLogits } from "../src/models/generate.js";
import { LlamaForCausalLM } from "../src/models/llama.js";
import { loadModel } from "../src/models/load.js";
import { Rng } from "../src/tensor/rng.js";

const rssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);
const now = () => performance.now() / 1000;
const out: Record<string, number | string> = {};

const tmp = mkdtempSync(join(tmpdir(), "perp-load-"));
try {
  const s260 = dataPath("models", "stories260K", "stories260K.bin");
  if (existsSync(s260)) {
    importLlama2c(s260, dataPath("models", "stories260K", "tok512.bin"), join(tmp, "s260"));
    const t = now();
    const m = await loadModel(join(tmp, "s260"));
    nextLogits(m.model, [1, 403, 407]);
    out.stories260k_load_s = +(now() - t).toFixed(4);
  }
  // ~1.1 GB of F32: hidden 2048, MLP 5504, 3 layers, vocab 32000, untied head.
  const cfg = {
    model_type: "llama",
    hidden_size: 2048,
    intermediate_size: 5504,
    num_hidden_layers: 3,
    num_attention_heads: 16,
    num_key_value_heads: 16,
    vocab_size: 32000,
    max_position_embeddings: 2048,
  };
  const gen = new LlamaForCausalLM(cfg);
  const rng = new Rng(0);
  const dir = join(tmp, "big");
  const tensors = gen.namedParameters().map(([name, p]) => ({
    name,
    dtype: "F32" as const,
    shape: p.shape,
    data:
      p.shape.length === 2 ? (rng.fillUniform(new Float32Array(p.size), -0.02, 0.02) as Float32Array) : p.data.fill(1),
  }));
  const bytes = tensors.reduce((a, t) => a + t.data.byteLength, 0);
  (await import("node:fs")).mkdirSync(dir, { recursive: true });
  saveCheckpoint(dir, tensors);
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
  tensors.length = 0;
  gen.namedParameters().forEach(([, p]) => {
    p.data = new Float32Array(0);
  });
  if (global.gc) global.gc();
  // measure in a fresh process so the writer's memory does not count
  const { execFileSync } = await import("node:child_process");
  const child = execFileSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "-e",
      `import { loadModel } from "./src/models/load.ts"; import { nextLogits } from "./src/models/generate.ts";
       const t = performance.now(); const m = await loadModel(${JSON.stringify(dir)}); const tl = performance.now() - t;
       nextLogits(m.model, [1, 2, 3]); const tf = performance.now() - t;
       console.log(JSON.stringify({ load_s: tl / 1000, load_and_forward_s: tf / 1000, peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024) }));`,
    ],
    { encoding: "utf8" },
  );
  const r = JSON.parse(child.trim().split("\n").pop() as string);
  out.big_weights_mb = Math.round(bytes / 2 ** 20);
  out.big_load_s = +r.load_s.toFixed(3);
  out.big_load_and_forward_s = +r.load_and_forward_s.toFixed(3);
  out.big_peak_rss_mb = r.peak_rss_mb;
  out.big_rss_over_weights = +(r.peak_rss_mb / (bytes / 2 ** 20)).toFixed(3);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
out.writer_peak_rss_mb = rssMb();
console.log(JSON.stringify(out));
