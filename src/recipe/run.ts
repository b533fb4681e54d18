// run(): prune → retrain/reconstruct → merge → evaluate → export, one stage after the other, each recorded in the run
// directory when it completes (stages/<name>.json), so a killed run resumes after its last completed stage (and
// retraining from its last checkpoint) and a finished run is not redone.
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { evaluate } from "../eval/evaluate.js";
import { compressibleLinears, decompressFolder, exportCompressed, NOTHING_TO_COMPRESS } from "../export/compressed.js";
import { resolveModel } from "../io/hf-hub.js";
import { importLlama2c } from "../io/llama2c.js";
import { writeFileAtomic } from "../io/safetensors.js";
import { loadModel, readConfig } from "../models/load.js";
import { checkBiasExportable, prunableLinears, type Subset } from "../peft/select.js";
import { prune, savePruned } from "../prune/index.js";
import { renderReport } from "../report/html.js";
import { retrainModel } from "../train/retrain-model.js";
import type { Recipe } from "./schema.js";
import { RecipeError } from "./schema.js";

export interface RunOptions {
  out: string;
  resume?: boolean;
  progress?: boolean;
  log?: (s: string) => void;
}

type Json = Record<string, unknown>;

export async function run(recipe: Recipe, o: RunOptions): Promise<Json> {
  const out = o.out;
  const log = o.log ?? (() => {});
  const stagesDir = join(out, "stages");
  const resultsPath = join(out, "results.json");
  const recipePath = join(out, "recipe.resolved.json");
  if (existsSync(resultsPath) && existsSync(join(stagesDir, "report.json"))) {
    log(`${out}: finished run, not redone (results.json)`);
    return JSON.parse(readFileSync(resultsPath, "utf8"));
  }
  if (existsSync(out) && readdirSync(out).length) {
    if (!o.resume)
      throw new RecipeError(`${out} holds an unfinished run: pass --resume to continue it, or choose another --out`);
    if (
      existsSync(recipePath) &&
      JSON.stringify(JSON.parse(readFileSync(recipePath, "utf8"))) !== JSON.stringify(recipe)
    )
      throw new RecipeError(
        `${out}: the recipe differs from the one this run started with (${recipePath}); refusing to resume`,
      );
  }
  if (recipe.model.id && recipe.retrain.training_mode !== "none" && recipe.retrain.peft_use_bias)
    // refused before anything is written (see checkBiasExportable)
    checkBiasExportable(readConfig(await resolveModel(recipe.model.id, { revision: recipe.model.revision })));
  mkdirSync(stagesDir, { recursive: true });
  writeFileAtomic(recipePath, [`${JSON.stringify(recipe, null, 2)}\n`]);
  const logPath = join(out, "log.jsonl");
  const event = (e: Json) => {
    appendFileSync(logPath, `${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
    log(`[${e.stage}] ${e.event}${e.detail ? `: ${e.detail}` : ""}`);
  };
  const stage = async (name: string, fn: () => Promise<Json>): Promise<Json> => {
    const p = join(stagesDir, `${name}.json`);
    if (existsSync(p)) return JSON.parse(readFileSync(p, "utf8"));
    event({ stage: name, event: "start" });
    const t0 = performance.now();
    const r = await fn();
    const done = {
      ...r,
      seconds: (performance.now() - t0) / 1000,
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    };
    writeFileAtomic(p, [`${JSON.stringify(done)}\n`]);
    event({ stage: name, event: "done", detail: `${done.seconds.toFixed(1)} s` });
    return done;
  };

  // 1. the dense model
  const src = await stage("model", async () => {
    if (recipe.model.llama2c) {
      const dir = join(out, "dense");
      importLlama2c(recipe.model.llama2c.model, recipe.model.llama2c.tokenizer, dir);
      return { dir };
    }
    return { dir: recipe.model.id as string };
  });
  const denseDir = src.dir as string;
  const ev = recipe.eval;
  const evalOf = async (dir: string) => {
    const m = await loadModel(dir, { revision: recipe.model.revision });
    if (!m.tokenizer) throw new Error(`${dir}: missing tokenizer.json`);
    const r = await evaluate(m.model, m.tokenizer, {
      ppl: ev.ppl,
      seqlen: ev.seqlen,
      maxTokens: ev.max_tokens,
      tasks: ev.tasks,
      limit: ev.limit,
      progress: o.progress,
    });
    return { perplexity: r.perplexity, tasks: r.tasks, eval_seconds: r.seconds };
  };
  const evals: Record<string, Json> = {};
  if (ev.stages.includes("dense")) evals.dense = await stage("eval-dense", () => evalOf(denseDir));

  // 2. prune
  const prunedDir = join(out, "pruned");
  const pr = await stage("prune", async () => {
    rmSync(prunedDir, { recursive: true, force: true });
    const m = await loadModel(denseDir, { revision: recipe.model.revision });
    const p = recipe.prune;
    const { report, masks } = await prune(m, {
      method: p.prune_method,
      sparsity: p.goal_sparsity,
      pattern: p.sparsity_type,
      scope: p.scope,
      calibSamples: p.calib_samples,
      calibSeqlen: p.calib_seqlen,
      calibDataset: p.calib_dataset,
      seed: p.seed,
      progress: o.progress,
    });
    savePruned(prunedDir, m, report, masks);
    return { report };
  });
  if (ev.stages.includes("pruned")) evals.pruned = await stage("eval-pruned", () => evalOf(prunedDir));

  // 3. retrain / reconstruct, merged into out/model (the dense-with-zeros HF export)
  const t = recipe.retrain;
  const modelDir = join(out, "model");
  let train: Json | null = null;
  if (t.training_mode !== "none") {
    train = await stage("retrain", async () => {
      const params: Subset[] = t.full_ft
        ? ["full"]
        : ([
            t.peft_use_bias && "bias",
            t.peft_use_ln && "norm",
            t.peft_use_lm_head && "head",
            t.peft_use_lora && "lora",
          ].filter(Boolean) as Subset[]);
      const m = await loadModel(prunedDir);
      const r = await retrainModel(m, {
        mode: t.training_mode as "retrain" | "reconstruct",
        dense: denseDir,
        params,
        loraType: t.lora_type,
        loraR: t.lora_r,
        loraAlpha: t.lora_alpha,
        steps: t.n_iterations,
        lr: t.initial_lr,
        batch: t.batch_size,
        gradAccum: t.gradient_accumulation_steps,
        warmup: t.warmup,
        weightDecay: t.weight_decay,
        clip: t.max_grad_norm,
        seqlen: t.seqlen,
        seed: t.seed,
        dataset: t.dataset,
        checkpointEvery: t.checkpoint_every,
        gradientCheckpointing: t.grad_checkpoint,
        packFrozen: t.pack_frozen,
        calibSamples: recipe.prune.calib_samples,
        out: modelDir,
        resume: true,
        progress: o.progress,
      });
      return { summary: r };
    });
    if (ev.stages.includes("retrained")) evals.retrained = await stage("eval-retrained", () => evalOf(modelDir));
  }
  const finalDir = train ? modelDir : prunedDir;

  // 4. export
  const exp = await stage("export", async () => {
    if (!recipe.export.compressed) return { dense_dir: finalDir };
    const cdir = join(out, "export-compressed");
    rmSync(cdir, { recursive: true, force: true });
    const m = await loadModel(finalDir);
    if (!compressibleLinears(m.model).length) {
      event({ stage: "export", event: "note", detail: `compressed export skipped: ${NOTHING_TO_COMPRESS}` });
      return { dense_dir: finalDir, compressed_skipped: NOTHING_TO_COMPRESS };
    }
    const sizes = exportCompressed(cdir, m);
    // round trip: decompress → bit-identical dense weights
    const back = decompressFolder(cdir);
    let roundTrip = back.size > 0;
    for (const [n, l] of prunableLinears(m.model)) {
      const d = back.get(`${n}.weight`);
      if (!d) continue;
      const a = new Uint32Array(d.buffer, d.byteOffset, d.length);
      const b = new Uint32Array(l.weight.data.buffer, l.weight.data.byteOffset, l.weight.data.length);
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) roundTrip = false;
    }
    if (!roundTrip) throw new Error(`${cdir}: compressed export does not decompress to the same weights`);
    return { dense_dir: finalDir, compressed_dir: cdir, ...sizes, round_trip: roundTrip };
  });

  // 5. results + report
  const prep = (pr.report ?? {}) as Json;
  const results: Json = {
    name: recipe.name,
    model: recipe.model.id ?? recipe.model.llama2c?.model,
    prune: {
      method: prep.method,
      pattern: prep.pattern,
      scope: prep.scope,
      sparsity: prep.sparsity,
      layers: prep.layers,
    },
    perplexity: Object.fromEntries(Object.entries(evals).map(([k, v]) => [k, v.perplexity])),
    tasks: Object.fromEntries(Object.entries(evals).map(([k, v]) => [k, v.tasks])),
    retrain: train ? (train.summary as Json) : null,
    export: exp,
    stages: Object.fromEntries(
      readdirSync(stagesDir)
        .filter((f) => f.endsWith(".json") && f !== "report.json")
        .map((f) => {
          const j = JSON.parse(readFileSync(join(stagesDir, f), "utf8"));
          return [f.slice(0, -5), { seconds: j.seconds, peak_rss_mb: j.peak_rss_mb }];
        }),
    ),
  };
  const lossPath = join(modelDir, "log.jsonl");
  const loss = existsSync(lossPath)
    ? readFileSync(lossPath, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { step: number; loss: number })
    : [];
  writeFileAtomic(resultsPath, [`${JSON.stringify(results, null, 2)}\n`]);
  const layers = ((prep.layers ?? []) as { name: string; sparsity: number }[]).map((l) => ({
    name: l.name,
    sparsity: l.sparsity,
  }));
  writeFileAtomic(join(out, "report.html"), [renderReport({ name: recipe.name, results, recipe, layers, loss })]);
  writeFileAtomic(join(stagesDir, "report.json"), [`${JSON.stringify({ done: true })}\n`]);
  event({ stage: "report", event: "done", detail: join(out, "report.html") });
  return results;
}
