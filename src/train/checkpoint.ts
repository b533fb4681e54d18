// Checkpoints of a retraining run: the trainable tensors and the AdamW moments (safetensors, F32) plus a JSON state
// (step, sampler position, loss history, the settings). Written into a fresh folder, then `latest` is replaced
// atomically, so a kill at any moment leaves the previous checkpoint intact.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from "../io/safetensors.js";
import type { AdamW } from "../nn/optim.js";
import type { Tensor } from "../tensor/tensor.js";

export interface TrainState {
  step: number;
  drawn: number;
  losses: number[];
  settings: Record<string, unknown>;
  seconds: number;
}

export function saveCheckpoint(dir: string, params: [string, Tensor][], opt: AdamW, state: TrainState): string {
  const root = join(dir, "checkpoints");
  mkdirSync(root, { recursive: true });
  const name = `step-${String(state.step).padStart(6, "0")}`;
  const tmp = join(root, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const tensors = [];
  for (const [n, p] of params) {
    const s = opt.state.get(n);
    tensors.push({ name: n, dtype: "F32" as const, shape: p.shape, data: p.data });
    if (s) {
      tensors.push({ name: `adam.m.${n}`, dtype: "F32" as const, shape: p.shape, data: s.m });
      tensors.push({ name: `adam.v.${n}`, dtype: "F32" as const, shape: p.shape, data: s.v });
    }
  }
  writeSafetensors(join(tmp, "trainable.safetensors"), tensors, { adam_step: String(opt.step) });
  writeFileAtomic(join(tmp, "state.json"), [`${JSON.stringify(state)}\n`]);
  const final = join(root, name);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  writeFileAtomic(join(root, "latest"), [name]);
  // keep the two newest
  const all = readdirSync(root)
    .filter((f) => f.startsWith("step-"))
    .sort();
  for (const old of all.slice(0, -2)) rmSync(join(root, old), { recursive: true, force: true });
  return final;
}

/**
 * The loss log (JSON lines with a `step`) cut back to the steps up to `step` (0: emptied): a resumed run logs again
 * the steps a killed run got past its last checkpoint, which would otherwise appear twice. Written atomically.
 */
export function trimLog(path: string, step: number): void {
  const stepOf = (l: string): number => {
    try {
      return (JSON.parse(l) as { step?: number }).step ?? Number.POSITIVE_INFINITY;
    } catch {
      return Number.POSITIVE_INFINITY; // a line cut short by the kill
    }
  };
  const lines = existsSync(path) ? readFileSync(path, "utf8").split("\n") : [];
  writeFileAtomic(
    path,
    lines.filter((l) => l.trim() && stepOf(l) <= step).map((l) => `${l}\n`),
  );
}

export function latestCheckpoint(dir: string): string | null {
  const p = join(dir, "checkpoints", "latest");
  if (!existsSync(p)) return null;
  const d = join(dir, "checkpoints", readFileSync(p, "utf8").trim());
  return existsSync(join(d, "state.json")) ? d : null;
}

export function loadCheckpoint(ckpt: string, params: [string, Tensor][], opt: AdamW): TrainState {
  const f = new SafetensorsFile(join(ckpt, "trainable.safetensors"));
  for (const [n, p] of params) {
    if (!f.tensors.has(n)) throw new Error(`${ckpt}: checkpoint lacks trainable tensor '${n}'`);
    p.data = f.f32(n).slice();
    const s = opt.state.get(n);
    if (s && f.tensors.has(`adam.m.${n}`)) {
      s.m.set(f.f32(`adam.m.${n}`));
      s.v.set(f.f32(`adam.v.${n}`));
    }
  }
  opt.step = Number(f.metadata.adam_step ?? 0);
  return JSON.parse(readFileSync(join(ckpt, "state.json"), "utf8")) as TrainState;
}
