// retrain(): next-token retraining of a PERP subset with masks kept. AdamW (β 0.9/0.999, ε 1e-8), linear schedule
// with warmup, gradient accumulation, optional clipping, per-block gradient checkpointing, JSON-lines loss log,
// checkpoints every K steps and a resume that reproduces the uninterrupted run bit for bit (same seed and threads).
import { appendFileSync, mkdirSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import { Progress } from "../cli/progress.js";
import { textSource } from "../io/datasets.js";
import type { LoadedModel } from "../models/load.js";
import type { CausalLM } from "../models/registry.js";
import * as F from "../nn/functional.js";
import type { LoraType } from "../nn/layers.js";
import { AdamW } from "../nn/optim.js";
import { type PackPolicy, packFrozenWeights, unpackWeights } from "../nn/packed.js";
import { backward, clearTape, noGrad } from "../nn/tape.js";
import { prunableLinears, type Subset, setupTrainable } from "../peft/select.js";
import { Arena, withArena } from "../tensor/arena.js";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type TrainState, trimLog } from "./checkpoint.js";
import { WindowSampler } from "./sampler.js";
import { lrAt, warmupSteps } from "./schedule.js";

export interface RetrainOptions {
  params: Subset[];
  loraType?: LoraType;
  loraR?: number;
  loraAlpha?: number;
  steps: number;
  lr: number;
  batch?: number;
  gradAccum?: number;
  warmup?: number;
  seqlen?: number;
  seed?: number;
  dataset?: string;
  weightDecay?: number;
  clip?: number;
  checkpointEvery?: number;
  /** Per-block gradient checkpointing: "auto" (default) turns it on when a micro-batch's activations would take more
   * than a quarter of the machine's memory (see activationBytes); it never changes the numbers, only time and memory. */
  gradientCheckpointing?: CheckpointPolicy;
  /** Frozen linear weights packed once for the GEMM (nn/packed.ts): "auto" (default) when the copies fit in memory
   * (two f32 copies of each frozen weight; see packFrozenWeights); never changes the numbers, only time and memory. */
  packFrozen?: PackPolicy;
  /** Run folder: log.jsonl and checkpoints/. */
  out: string;
  resume?: boolean;
  /** Calibration documents to exclude from the training data. */
  excludeDocs?: number[];
  progress?: boolean;
}

export interface RetrainSummary {
  trainable_params: number;
  trainable_pct: number;
  steps: number;
  loss_first10: number;
  loss_last10: number;
  seconds: number;
  tokens_per_s: number;
  peak_rss_mb: number;
  /** Whether blocks ran under gradient checkpointing (--grad-checkpoint; never changes the numbers). */
  gradient_checkpointing: boolean;
  /** MB of pre-packed copies of frozen weights (--pack-frozen; 0 when none; never changes the numbers). */
  packed_frozen_mb: number;
  resumed_from: number | null;
}

export class TrainError extends Error {}

export function retrainSettings(o: RetrainOptions, seqlen: number): Record<string, unknown> {
  return {
    params: [...o.params].sort(),
    lora_type: o.params.includes("lora") ? (o.loraType ?? "lora") : null,
    lora_r: o.loraR ?? 16,
    lora_alpha: o.loraAlpha ?? 32,
    steps: o.steps,
    lr: o.lr,
    batch: o.batch ?? 1,
    grad_accum: o.gradAccum ?? 1,
    warmup: o.warmup ?? 0.1,
    seqlen,
    seed: o.seed ?? 0,
    dataset: o.dataset ?? "c4",
    weight_decay: o.weightDecay ?? 0,
    clip: o.clip ?? 0,
  };
}

export function diffSettings(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k}: checkpoint ${JSON.stringify(a[k])} vs now ${JSON.stringify(b[k])}`);
}

/** Index of the first block whose output is non-finite for `ids` (diagnosing a NaN loss). */
function firstBadLayer(m: LoadedModel, ids: Int32Array, B: number, T: number): string {
  return noGrad(() => {
    let x = m.model.embed(ids, B, T);
    if (!x.data.every(Number.isFinite)) return "the embeddings";
    for (let i = 0; i < m.model.numBlocks; i++) {
      x = m.model.runBlock(i, x, B, T);
      if (!x.data.every(Number.isFinite))
        return `block ${i} (${m.model.blockLinears(i)[0][0].replace(/\.[^.]+\.[^.]+$/, "")})`;
    }
    return "the LM head";
  });
}

export type CheckpointPolicy = "auto" | "on" | "off";
export const CHECKPOINT_POLICIES: readonly CheckpointPolicy[] = ["auto", "on", "off"];

/**
 * Rough bytes a micro-batch of B x T tokens keeps for its backward without checkpointing: per token and block, two
 * copies of every linear's output (the output and what the activation / RoPE / attention makes of it), six
 * hidden-sized tensors (norm outputs, residuals) and the attention probabilities; plus the logits and their gradient.
 */
export function activationBytes(model: CausalLM, B: number, T: number): number {
  const lins = model.numBlocks > 0 ? model.blockLinears(0) : [];
  const outs = lins.reduce((a, [, l]) => a + l.outFeatures, 0);
  const hidden = lins.length ? lins[0][1].inFeatures : 0;
  const c = model.config;
  const heads = Number(c.num_attention_heads ?? c.n_head ?? 0) || 0;
  return 4 * B * T * (model.numBlocks * (2 * outs + 6 * hidden + heads * T) + 3 * model.vocabSize);
}

/** Whether a B x T micro-batch trains with per-block checkpointing under `policy`. */
export function useCheckpointing(policy: CheckpointPolicy, model: CausalLM, B: number, T: number): boolean {
  if (policy === "on" || policy === "off") return policy === "on";
  return activationBytes(model, B, T) > totalmem() / 4;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);

export async function retrain(m: LoadedModel, o: RetrainOptions): Promise<RetrainSummary> {
  if (!(o.steps >= 1 && Number.isInteger(o.steps)))
    throw new TrainError(`steps must be a positive integer (got ${o.steps})`);
  if (!(o.lr > 0)) throw new TrainError(`lr must be > 0 (got ${o.lr})`);
  if (!m.tokenizer) throw new TrainError(`${m.dir}: retraining needs tokenizer.json`);
  const seqlen = o.seqlen ?? Math.min(m.model.maxContext, 2048);
  if (seqlen > m.model.maxContext)
    throw new TrainError(`seqlen ${seqlen} exceeds the model's context ${m.model.maxContext}`);
  const B = o.batch ?? 1;
  const accum = o.gradAccum ?? 1;
  const ckpt = useCheckpointing(o.gradientCheckpointing ?? "auto", m.model, B, seqlen);
  const settings = retrainSettings(o, seqlen);
  const { params, nTrain, nModel } = setupTrainable(m.model, o);
  const opt = new AdamW(params, { lr: o.lr, weightDecay: o.weightDecay ?? 0 });
  const sampler = new WindowSampler(
    await textSource(o.dataset ?? "c4"),
    m.tokenizer,
    seqlen,
    o.seed ?? 0,
    o.excludeDocs ?? [],
  );
  mkdirSync(o.out, { recursive: true });
  const logPath = join(o.out, "log.jsonl");
  let state: TrainState = { step: 0, drawn: 0, losses: [], settings, seconds: 0 };
  let resumedFrom: number | null = null;
  if (o.resume) {
    const ck = latestCheckpoint(o.out);
    if (ck) {
      const prev = JSON.parse(JSON.stringify(loadCheckpoint(ck, params, opt))) as TrainState;
      const d = diffSettings(prev.settings, settings);
      if (d.length) throw new TrainError(`refusing to resume ${o.out} with a different recipe:\n  ${d.join("\n  ")}`);
      state = prev;
      sampler.fastForward(state.drawn);
      resumedFrom = state.step;
    }
  }
  trimLog(logPath, state.step); // a fresh run starts an empty log; a resumed one keeps the checkpointed steps
  const fullMasks = o.params.includes("full") ? prunableLinears(m.model).filter(([, l]) => l.mask) : [];
  for (const [, l] of fullMasks) l.applyMask();
  const warm = warmupSteps(o.steps, o.warmup ?? 0.1);
  const every = o.checkpointEvery ?? Math.max(1, Math.floor(o.steps / 10));
  const bar = o.progress ? new Progress("retrain", o.steps, "step") : null;
  bar?.tick(state.step);
  const t0 = performance.now() - state.seconds * 1000;
  let tokens = 0;
  const tRun = performance.now();
  const arena = new Arena();
  const packed = packFrozenWeights(m.model, o.packFrozen ?? "auto");
  try {
    for (let step = state.step; step < o.steps; step++) {
      opt.zeroGrad();
      let lossSum = 0;
      for (let a = 0; a < accum; a++)
        withArena(arena, () => {
          const ids = sampler.batch(B);
          const targets = new Int32Array(B * seqlen);
          for (let i = 0; i < targets.length; i++) targets[i] = i % seqlen === seqlen - 1 ? -100 : ids[i + 1];
          // the LM head and the loss over chunks of rows when the head is frozen (large vocabularies: see there)
          const h = m.model.hidden(ids, B, seqlen, { checkpoint: ckpt });
          const { loss } = F.headCrossEntropy(h, (x) => m.model.head(x), targets, m.model.vocabSize);
          const lv = loss.data[0];
          if (!Number.isFinite(lv)) {
            clearTape();
            throw new TrainError(
              `non-finite loss ${lv} at step ${step + 1}: first non-finite activation in ${firstBadLayer(m, ids, B, seqlen)}; the last good checkpoint is kept in ${join(o.out, "checkpoints")}`,
            );
          }
          backward(accum === 1 ? loss : F.scale(loss, 1 / accum));
          lossSum += lv;
          tokens += B * seqlen;
        });
      if (o.clip && o.clip > 0) {
        let sq = 0;
        // readGrad: read and scaled in place, which keeps a row-tracked (embedding) gradient tracked
        for (const [, p] of params) {
          const g = p.readGrad();
          if (g) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
        }
        // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), applied when below 1
        const coef = o.clip / (Math.sqrt(sq) + 1e-6);
        if (coef < 1)
          for (const [, p] of params) {
            const g = p.readGrad();
            if (g) for (let i = 0; i < g.length; i++) g[i] *= coef;
          }
      }
      try {
        opt.update(lrAt(step, o.steps, warm, o.lr));
      } catch (e) {
        throw new TrainError(
          `step ${step + 1}: ${(e as Error).message}; the last good checkpoint is kept in ${join(o.out, "checkpoints")}`,
        );
      }
      for (const [, l] of fullMasks) l.applyMask();
      const loss = lossSum / accum;
      state.losses.push(loss);
      state.step = step + 1;
      state.drawn = sampler.drawn;
      state.seconds = (performance.now() - t0) / 1000;
      appendFileSync(
        logPath,
        `${JSON.stringify({ step: step + 1, loss, lr: lrAt(step, o.steps, warm, o.lr), seconds: +state.seconds.toFixed(3) })}\n`,
      );
      if (state.step % every === 0 || state.step === o.steps) saveCheckpoint(o.out, params, opt, state);
      bar?.tick(1, `loss ${loss.toFixed(4)} ${(tokens / ((performance.now() - tRun) / 1000)).toFixed(0)} tok/s`);
    }
  } finally {
    unpackWeights(m.model); // the caller may merge adapters into the weights next
  }
  bar?.end();
  const secs = (performance.now() - tRun) / 1000;
  return {
    trainable_params: nTrain,
    trainable_pct: (100 * nTrain) / nModel,
    steps: o.steps,
    loss_first10: mean(state.losses.slice(0, 10)),
    loss_last10: mean(state.losses.slice(-10)),
    seconds: state.seconds,
    tokens_per_s: tokens / Math.max(secs, 1e-9),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    gradient_checkpointing: ckpt,
    packed_frozen_mb: Math.round(packed.bytes / 2 ** 20) * (packed.weights > 0 ? 1 : 0),
    resumed_from: resumedFrom,
  };
}
