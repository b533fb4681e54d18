// Reconstruct mode (PERP, ZIB-IOL/PERP prune_methods.py): block by block, train the block's share of the subset so
// that the pruned block reproduces the dense block's outputs on the same inputs (MSE), on the calibration windows.
// The inputs are one stream, the pruned model's own activations: block i's targets are the dense block i applied to
// the outputs of the already reconstructed blocks < i, as PERP computes them (get_outputs through the dense layer,
// prune, reconstruct, get_outputs through the pruned layer). `steps` optimizer steps per block (fresh AdamW, linear
// warmup schedule per block, batches in order); then the block's adapters are merged and its outputs feed block i+1.
// After each block its trained tensors (before the merge) are checkpointed; a resumed run loads the finished blocks,
// merges them, recomputes the stream through them and goes on from the next block: the same bits as an
// uninterrupted run, since each block starts from a fresh optimizer and the first calibration window anyway.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Progress } from "../cli/progress.js";
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from "../io/safetensors.js";
import type { Tokenizer } from "../io/tokenizer.js";
import type { LoadedModel } from "../models/load.js";
import * as F from "../nn/functional.js";
import { AdamW } from "../nn/optim.js";
import { backward, clearTape, noGrad } from "../nn/tape.js";
import { countParams, setupTrainable } from "../peft/select.js";
import { calibrationWindows } from "../prune/calibration.js";
import { blockOutputs } from "../prune/sequential.js";
import { Arena, allocRaw, withArena } from "../tensor/arena.js";
import { Tensor } from "../tensor/tensor.js";
import { trimLog } from "./checkpoint.js";
import type { RetrainOptions, RetrainSummary } from "./loop.js";
import { diffSettings, retrainSettings, TrainError } from "./loop.js";
import { lrAt, warmupSteps } from "./schedule.js";

export interface BlockReconstruction {
  block: number;
  mse_before: number;
  mse_after: number;
  trainable: number;
}

export interface ReconstructOptions extends RetrainOptions {
  calibSamples?: number;
  calibDataset?: string;
}

/** Block i of m over the N windows X (N·L rows), 8 windows per forward: a fresh output array. */
function blockOut(m: LoadedModel, i: number, X: Float32Array, N: number, L: number, arena: Arena): Float32Array {
  const out = new Float32Array(X.length);
  blockOutputs(m.model, i, X, N, L, 8, arena, out);
  return out;
}

/** What a reconstruct checkpoint records besides the finished blocks' tensors (one safetensors file per block). */
interface ReconstructState {
  blocks_done: number;
  blocks: BlockReconstruction[];
  losses: number[];
  settings: Record<string, unknown>;
  seconds: number;
}

const ckptDir = (out: string) => join(out, "checkpoints", "reconstruct");
const blockFile = (out: string, i: number) => join(ckptDir(out), `block-${String(i).padStart(4, "0")}.safetensors`);

function mseOf(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s / a.length;
}

export async function reconstruct(
  student: LoadedModel,
  teacher: LoadedModel,
  tok: Tokenizer,
  o: ReconstructOptions,
): Promise<
  RetrainSummary & {
    blocks: BlockReconstruction[];
    /** PERP's metrics: the per-block MSEs summed, before and after reconstruction. */
    reconstruction_error_initial: number;
    reconstruction_error_final: number;
  }
> {
  if (!(o.steps >= 1)) throw new TrainError(`steps must be >= 1 (got ${o.steps})`);
  if (!(o.lr > 0)) throw new TrainError(`lr must be > 0 (got ${o.lr})`);
  const L = o.seqlen ?? Math.min(student.model.maxContext, 2048);
  if (L > student.model.maxContext)
    throw new TrainError(`seqlen ${L} exceeds the model's context ${student.model.maxContext}`);
  const cal = await calibrationWindows(tok, {
    samples: o.calibSamples ?? 128,
    seqlen: L,
    seed: o.seed ?? 0,
    source: o.calibDataset ?? "c4",
  });
  const N = cal.samples;
  const { params, nModel } = setupTrainable(student.model, o);
  // this block's trainable tensors: the parameters of its modules that require grad
  const ownOf = (i: number) => {
    const prefix = student.model.blockLinears(i)[0][0].replace(/\.[^.]+\.[^.]+$/, ".");
    return params.filter(([n]) => n.startsWith(prefix));
  };
  // what reconstruction trains: the blocks' own tensors (not e.g. the final norm, outside every block)
  const nTrain = Array.from({ length: student.model.numBlocks }, (_, i) => countParams(ownOf(i))).reduce(
    (a, b) => a + b,
    0,
  );
  let Xs = noGrad(() => student.model.embed(cal.ids, N, L)).data;
  const arena = new Arena();
  const C = Xs.length / (N * L);
  const B = Math.min(o.batch ?? 1, N);
  const settings = {
    ...retrainSettings(o, L),
    mode: "reconstruct",
    calib_samples: o.calibSamples ?? 128,
    calib_dataset: o.calibDataset ?? "c4",
  };
  let state: ReconstructState = { blocks_done: 0, blocks: [], losses: [], settings, seconds: 0 };
  // The loss log, as retraining writes it (step counts across blocks; `block` says which one)
  mkdirSync(o.out, { recursive: true });
  const logPath = join(o.out, "log.jsonl");
  const statePath = join(ckptDir(o.out), "state.json");
  let resumedFrom: number | null = null;
  if (o.resume && existsSync(statePath)) {
    const prev = JSON.parse(readFileSync(statePath, "utf8")) as ReconstructState;
    const d = diffSettings(prev.settings, settings);
    if (d.length) throw new TrainError(`refusing to resume ${o.out} with a different recipe:\n  ${d.join("\n  ")}`);
    state = prev;
    resumedFrom = state.losses.length; // steps across blocks, as the log counts them
    // the finished blocks as they were trained, merged; the stream through them recomputed
    for (let i = 0; i < state.blocks_done; i++) {
      const f = new SafetensorsFile(blockFile(o.out, i));
      for (const [n, p] of ownOf(i)) {
        if (!f.tensors.has(n)) throw new TrainError(`${blockFile(o.out, i)}: checkpoint lacks trainable tensor '${n}'`);
        p.data = f.f32(n).slice();
      }
      for (const [, l] of student.model.blockLinears(i)) l.mergeLora();
      Xs = blockOut(student, i, Xs, N, L, arena);
    }
  } else {
    rmSync(ckptDir(o.out), { recursive: true, force: true }); // a fresh run: an earlier run's blocks do not count
  }
  trimLog(logPath, state.losses.length);
  mkdirSync(ckptDir(o.out), { recursive: true });
  const { blocks, losses } = state;
  const t0 = performance.now() - state.seconds * 1000;
  const bar = o.progress ? new Progress("reconstruct", student.model.numBlocks * o.steps, "step") : null;
  bar?.tick(state.blocks_done * o.steps);
  const warm = warmupSteps(o.steps, o.warmup ?? 0.1, "floor"); // PERP: int(0.1 * n_iterations)
  for (let i = state.blocks_done; i < student.model.numBlocks; i++) {
    const Y = blockOut(teacher, i, Xs, N, L, arena); // the dense block on the pruned stream
    const before = mseOf(blockOut(student, i, Xs, N, L, arena), Y);
    const own = ownOf(i);
    const opt = own.length ? new AdamW(own, { lr: o.lr, weightDecay: o.weightDecay ?? 0 }) : null;
    let cursor = 0; // each block's batches start at the first window (PERP builds a fresh, unshuffled loader per block)
    for (let step = 0; opt && step < o.steps; step++) {
      opt.zeroGrad();
      let lsum = 0;
      for (let a = 0; a < (o.gradAccum ?? 1); a++) {
        const s0 = cursor % N;
        const b = Math.min(B, N - s0);
        cursor += b;
        // activations from the arena, as a retraining step takes them (the gradients of the parameters are not)
        withArena(arena, () => {
          const xb = allocRaw(b * L * C);
          xb.set(Xs.subarray(s0 * L * C, (s0 + b) * L * C));
          const loss = F.mse(
            student.model.runBlock(i, new Tensor(xb, [b * L, C]), b, L),
            Y.subarray(s0 * L * C, (s0 + b) * L * C),
          );
          const lv = loss.data[0];
          if (!Number.isFinite(lv)) {
            clearTape();
            throw new TrainError(`non-finite reconstruction loss at block ${i}, step ${step + 1}`);
          }
          lsum += lv;
          backward((o.gradAccum ?? 1) === 1 ? loss : F.scale(loss, 1 / (o.gradAccum ?? 1)));
        });
      }
      opt.update(lrAt(step, o.steps, warm, o.lr));
      losses.push(lsum / (o.gradAccum ?? 1));
      appendFileSync(
        logPath,
        `${JSON.stringify({ step: losses.length, block: i, loss: losses[losses.length - 1], lr: lrAt(step, o.steps, warm, o.lr) })}\n`,
      );
      bar?.tick(1, `block ${i} mse ${(lsum / (o.gradAccum ?? 1)).toExponential(3)}`);
    }
    // the block's trained tensors (before the merge, which drops the adapters), then the state that counts them
    writeSafetensors(
      blockFile(o.out, i),
      own.map(([n, p]) => ({ name: n, dtype: "F32" as const, shape: p.shape, data: p.data })),
    );
    for (const [, l] of student.model.blockLinears(i)) l.mergeLora();
    Xs = blockOut(student, i, Xs, N, L, arena);
    blocks.push({ block: i, mse_before: before, mse_after: mseOf(Xs, Y), trainable: countParams(own) });
    state.blocks_done = i + 1;
    state.seconds = (performance.now() - t0) / 1000;
    writeFileAtomic(statePath, [`${JSON.stringify(state)}\n`]);
  }
  bar?.end();
  const secs = (performance.now() - t0) / 1000;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return {
    trainable_params: nTrain,
    trainable_pct: (100 * nTrain) / nModel,
    steps: o.steps,
    loss_first10: mean(losses.slice(0, 10)),
    loss_last10: mean(losses.slice(-10)),
    seconds: secs,
    tokens_per_s: (losses.length * B * (o.gradAccum ?? 1) * L) / secs,
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    gradient_checkpointing: false,
    packed_frozen_mb: 0, // one block at a time: nothing to checkpoint
    resumed_from: resumedFrom,
    blocks,
    reconstruction_error_initial: blocks.reduce((a, b) => a + b.mse_before, 0),
    reconstruction_error_final: blocks.reduce((a, b) => a + b.mse_after, 0),
  };
}
