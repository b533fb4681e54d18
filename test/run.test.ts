// Recipes and `perp run`: validation messages, sweeps, a complete run directory on a tiny model, kill -9 + resume
// giving the same results, compressed export round trip, and the report in headless Chromium when available.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compressWeight, decompressFolder, exportCompressed } from "../src/export/compressed.js";
import { saveCheckpoint, type TensorOut } from "../src/io/safetensors.js";
import { loadModel } from "../src/models/load.js";
import { expandSweeps, loadRecipes } from "../src/recipe/load.js";
import { run } from "../src/recipe/run.js";
import { validateRecipe } from "../src/recipe/schema.js";
import { Rng } from "../src/tensor/rng.js";
import { MICRO_LLAMA, TOK, writeTinyLlama, writeTokenizer } from "./fixtures.js";

const have = existsSync(TOK);
const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));

describe("recipe validation", () => {
  it("a typo, a wrong type and an impossible combination each give one clear message", () => {
    expect(() => validateRecipe({ model: { id: "x" }, prune: { goal_sparsty: 0.5 } })).toThrow(
      /prune.goal_sparsty: unknown key \(did you mean 'goal_sparsity'\?\)/,
    );
    expect(() => validateRecipe({ model: { id: "x" }, retrain: { lora_r: "big" } })).toThrow(
      /retrain.lora_r: Expected number, received string/,
    );
    expect(() => validateRecipe({ model: { id: "x" }, retrain: { lora_r: 0 } })).toThrow(
      /retrain.lora_r: Number must be greater than 0/,
    );
    expect(() => validateRecipe({ model: { id: "x" }, prune: { goal_sparsity: 1 } })).toThrow(/prune.goal_sparsity/);
    expect(() => validateRecipe({ model: {} })).toThrow(/give exactly one of model.id and model.llama2c/);
    expect(() => validateRecipe({ model: { id: "x" }, retrain: { peft_use_ln: false, peft_use_lora: false } })).toThrow(
      /nothing to train/,
    );
    const ok = validateRecipe({
      model: { id: "x" },
      prune: { sparsity_type: "2:4" },
      retrain: { lora_type: "mask_lora" },
    });
    expect(ok.retrain.lora_r).toBe(16);
    expect(ok.eval.ppl).toEqual(["wikitext2"]);
    // PERP's own knob names (main.py defaults) are understood, and what perp does not do is refused by name
    const perp = validateRecipe({
      model: { id: "x" },
      prune: { reconstruct_n_samples: 64 },
      retrain: { peft_strategy: "FullFT", lora_dropout: 0, optim: "adamw_torch", lr_scheduler_type: "linear" },
    });
    expect(perp.prune.reconstruct_n_samples).toBe(64);
    expect(perp.prune.calib_samples).toBe(64); // resolved into perp's own names once, at validation
    expect(perp.retrain.full_ft).toBe(true);
    expect(
      validateRecipe({ model: { id: "x" }, retrain: { gradient_checkpointing: true } }).retrain.grad_checkpoint,
    ).toBe("on");
    expect(() => validateRecipe({ model: { id: "x" }, retrain: { lora_dropout: 0.05 } })).toThrow(
      /retrain.lora_dropout: LoRA dropout is not supported/,
    );
    expect(() => validateRecipe({ model: { id: "x" }, retrain: { lr_scheduler_type: "cosine" } })).toThrow(
      /retrain.lr_scheduler_type/,
    );
    expect(() =>
      validateRecipe({ model: { id: "x" }, retrain: { training_mode: "reconstruct", peft_strategy: "FullFT" } }),
    ).toThrow(/full_ft is not supported with training_mode: reconstruct/);
    expect(() =>
      validateRecipe({ model: { id: "x" }, prune: { calib_samples: 32, reconstruct_n_samples: 64 } }),
    ).toThrow(/give one of calib_samples and reconstruct_n_samples/);
  });

  it("a list value for a scalar key expands into the grid of runs; list-typed keys do not", () => {
    const runs = expandSweeps({
      name: "s",
      model: { id: "x" },
      prune: { goal_sparsity: [0.5, 0.6] },
      retrain: { lora_r: [4, 8] },
      eval: { ppl: ["wikitext2", "c4"] },
    });
    expect(runs).toHaveLength(4);
    expect(runs.map((r) => r.name)).toContain("s-goal_sparsity=0.6-lora_r=8");
    expect((runs[0].eval as { ppl: string[] }).ppl).toEqual(["wikitext2", "c4"]);
  });

  it("the CLI rejects a bad recipe without writing anything; overrides apply", () => {
    const dir = tmp("perp-rec-");
    const f = join(dir, "r.yaml");
    writeFileSync(f, "model:\n  id: x\nretrain:\n  lora_r: 0\n");
    const out = join(dir, "out");
    const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli/run.ts", "run", f, "--out", out], {
      encoding: "utf8",
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/retrain.lora_r: Number must be greater than 0/);
    expect(existsSync(out)).toBe(false);
    const [rec] = loadRecipes(f, ["retrain.lora_r=4", "prune.prune_method=wanda"]);
    expect(rec.retrain.lora_r).toBe(4);
    expect(rec.prune.prune_method).toBe("wanda");
  });
});

describe("compressed-tensors export", () => {
  it("bitmask and 2:4 layouts decompress to bit-identical weights", () => {
    const w = Float32Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? 0 : i * 0.5 - 3));
    const parts = compressWeight("m.l", w, 3, 8, "sparse-bitmask", "F32");
    expect(parts.map((p) => p.name)).toEqual(["m.l.shape", "m.l.compressed", "m.l.bitmask", "m.l.row_offsets"]);
    expect(parts[2].shape).toEqual([3, 1]);
    const w24 = Float32Array.from({ length: 16 }, (_, i) => ([0, 3].includes(i % 4) ? i + 1 : 0));
    const p24 = compressWeight("m.k", w24, 2, 8, "sparse-24-bitmask", "F32");
    expect(p24[1].shape).toEqual([2, 4]);
    expect(p24[0].shape).toEqual([2, 1]);
  });
});

describe("perp run refuses before writing anything", () => {
  it("the bias subset on a Mistral model whose window binds", async () => {
    const model = tmp("perp-run-mi-");
    writeFileSync(
      join(model, "config.json"),
      JSON.stringify({ ...MICRO_LLAMA, model_type: "mistral", sliding_window: 4, max_position_embeddings: 16 }),
    );
    const dir = tmp("perp-run-mr-");
    writeFileSync(join(dir, "r.yaml"), `name: m\nmodel:\n  id: ${model}\nretrain:\n  peft_use_bias: true\n`);
    const [rec] = loadRecipes(join(dir, "r.yaml"));
    const out = join(tmp("perp-run-mo-"), "run");
    await expect(run(rec, { out })).rejects.toThrow(/'bias' subset cannot be used on this Mistral model/);
    expect(existsSync(out)).toBe(false);
  });
});

describe.skipIf(!have)("perp run on GPT-2 (Conv1D layers)", () => {
  it("skips the compressed export with the reason (compressed-tensors compresses nn.Linear only)", async () => {
    const model = tmp("perp-run-g-");
    const [C, L, V, P] = [16, 1, 512, 64];
    const rng = new Rng(5);
    const ts: TensorOut[] = [];
    const add = (name: string, shape: number[]) =>
      ts.push({
        name,
        dtype: "F32",
        shape,
        data: rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b)), 0.2) as Float32Array,
      });
    add("transformer.wte.weight", [V, C]);
    add("transformer.wpe.weight", [P, C]);
    for (const n of ["ln_1", "ln_2"]) for (const k of ["weight", "bias"]) add(`transformer.h.0.${n}.${k}`, [C]);
    for (const [n, i, o] of [
      ["attn.c_attn", C, 3 * C],
      ["attn.c_proj", C, C],
      ["mlp.c_fc", C, 4 * C],
      ["mlp.c_proj", 4 * C, C],
    ] as const) {
      add(`transformer.h.0.${n}.weight`, [i, o]);
      add(`transformer.h.0.${n}.bias`, [o]);
    }
    for (const k of ["weight", "bias"]) add(`transformer.ln_f.${k}`, [C]);
    saveCheckpoint(model, ts);
    writeFileSync(
      join(model, "config.json"),
      JSON.stringify({ model_type: "gpt2", vocab_size: V, n_embd: C, n_layer: L, n_head: 2, n_positions: P }),
    );
    writeTokenizer(model);
    const out = join(tmp("perp-run-go-"), "run");
    const dir = tmp("perp-run-gr-");
    writeFileSync(
      join(dir, "r.yaml"),
      `name: g\nmodel:\n  id: ${model}\nprune:\n  goal_sparsity: 0.5\nretrain:\n  training_mode: none\neval:\n  ppl: [wikitext2]\n  max_tokens: 256\n  stages: [pruned]\n`,
    );
    const [rec] = loadRecipes(join(dir, "r.yaml"));
    const res = await run(rec, { out });
    expect(String((res.export as Record<string, unknown>).compressed_skipped)).toMatch(/Conv1D/);
    expect(existsSync(join(out, "export-compressed"))).toBe(false);
    expect(readFileSync(join(out, "report.html"), "utf8")).toMatch(/compressed export skipped/);
    await expect(async () =>
      exportCompressed(tmp("perp-run-gx-"), await loadModel(join(out, "pruned"))),
    ).rejects.toThrow(/no nn.Linear among the pruned layers/);
  });
});

function recipeFor(model: string, extra = ""): string {
  return `name: tiny
model:
  id: ${model}
prune:
  prune_method: magnitude
  goal_sparsity: 0.5
  sparsity_type: "2:4"
retrain:
  lora_type: mask_lora
  lora_r: 2
  n_iterations: 8
  initial_lr: 0.01
  seqlen: 32
  checkpoint_every: 1
eval:
  ppl: [wikitext2]
  seqlen: 32
  max_tokens: 1024
  tasks: [piqa]
  limit: 3
${extra}`;
}

/** results.json without timings (those differ between runs). */
function metrics(p: string): unknown {
  const r = JSON.parse(readFileSync(p, "utf8"));
  delete r.stages;
  for (const k of ["seconds", "peak_rss_mb", "tokens_per_s", "resumed_from"]) if (r.retrain) delete r.retrain[k];
  if (r.export) for (const k of ["seconds", "peak_rss_mb", "dense_dir", "compressed_dir"]) delete r.export[k];
  for (const l of r.prune?.layers ?? []) delete l.seconds;
  for (const s of Object.values(r.tasks ?? {}))
    for (const t of Object.values(s as object)) delete (t as Record<string, unknown>).seconds;
  return r;
}

describe.skipIf(!have)("perp run on a tiny model", () => {
  const model = tmp("perp-run-m-");
  writeTinyLlama(model);
  const recipe = join(tmp("perp-run-r-"), "tiny.yaml");
  writeFileSync(recipe, recipeFor(model));
  const cli = (args: string[]) => [process.execPath, ["--import", "tsx", "src/cli/run.ts", ...args]] as const;
  const env = { ...process.env, PERP_QUIET: "1" };

  it("writes a complete run directory; a finished run is not redone", async () => {
    const out = join(tmp("perp-run-o-"), "run");
    const [bin, args] = cli(["run", recipe, "--out", out, "--json"]);
    const res = JSON.parse(execFileSync(bin, args, { encoding: "utf8", env }));
    for (const f of [
      "recipe.resolved.json",
      "log.jsonl",
      "results.json",
      "report.html",
      "pruned",
      "model",
      "export-compressed",
    ])
      expect(existsSync(join(out, f))).toBe(true);
    expect(res.prune.sparsity).toBeCloseTo(0.5, 10);
    expect(Object.keys(res.perplexity)).toEqual(["dense", "pruned", "retrained"]);
    expect(res.export.format).toBe("sparse-24-bitmask");
    expect(res.export.round_trip).toBe(true);
    expect(res.retrain.trainable_pct).toBeGreaterThan(0);
    const m = await loadModel(join(out, "model"));
    const back = decompressFolder(join(out, "export-compressed"));
    expect(back.size).toBe(14);
    const again = execFileSync(bin, args, { encoding: "utf8", env });
    expect(JSON.parse(again)).toEqual(res);
    expect(m.model.numBlocks).toBe(2);
    const exp = tmp("perp-exp-");
    const sz = exportCompressed(exp, m);
    expect(sz.compressed_bytes).toBeLessThan(sz.dense_bytes);
  });

  it("kill -9 at a random moment, then --resume: the same results.json numbers", async () => {
    const ref = join(tmp("perp-run-a-"), "run");
    const [bin, a1] = cli(["run", recipe, "--out", ref]);
    execFileSync(bin, a1, { env });
    const cut = join(tmp("perp-run-b-"), "run");
    const [b2, a2] = cli(["run", recipe, "--out", cut]);
    const child = spawn(b2, a2, { env, stdio: "ignore" });
    const exited = new Promise((r) => child.on("exit", r));
    const delay = 300 + Math.floor(Math.random() * 1500);
    await new Promise((r) => setTimeout(r, delay));
    child.kill("SIGKILL");
    await exited;
    const [b3, a3] = cli(["run", recipe, "--out", cut, "--resume"]);
    if (existsSync(cut) && readdirSync(cut).length) execFileSync(b3, a3, { env });
    else execFileSync(b2, a2, { env });
    const [x, y] = [metrics(join(cut, "results.json")), metrics(join(ref, "results.json"))];
    if (JSON.stringify(x) !== JSON.stringify(y))
      writeFileSync("/tmp/perp-resume-diff.json", JSON.stringify({ x, y }, null, 1));
    expect(x).toEqual(y);
  });

  it("report.html renders in headless Chromium with data in both charts and no console errors", () => {
    const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
    if (!chromium) return; // Chromium is optional on developer machines; CI installs it
    const out = join(tmp("perp-run-c-"), "run");
    const [bin, args] = cli(["run", recipe, "--out", out]);
    execFileSync(bin, args, { env });
    const html = readFileSync(join(out, "report.html"), "utf8");
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org)/);
    const dom = execFileSync(
      chromium,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        `--user-data-dir=${tmp("perp-chr-")}`,
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        `file://${join(out, "report.html")}`,
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    expect(dom).toMatch(/<svg id="sparsity-chart" data-points="14"/);
    expect(dom).toMatch(/<svg id="loss-chart" data-points="8"/);
    expect(dom).toMatch(/<rect class="bar"/);
    expect(dom).toContain("perp report");
  });
});
