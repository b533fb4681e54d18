// Task registry (name → definition).
import { arcChallenge, arcEasy } from "./arc.js";
import { boolq } from "./boolq.js";
import { hellaswag } from "./hellaswag.js";
import { openbookqa } from "./openbookqa.js";
import { piqa } from "./piqa.js";
import { rte } from "./rte.js";
import type { Task } from "./types.js";
import { winogrande } from "./winogrande.js";

export const TASKS: Record<string, Task> = Object.fromEntries(
  [boolq, rte, hellaswag, winogrande, arcEasy, arcChallenge, openbookqa, piqa].map((t) => [t.name, t]),
);

export function getTask(name: string): Task {
  const t = TASKS[name];
  if (!t) throw new Error(`unknown task '${name}' (available: ${Object.keys(TASKS).join(", ")})`);
  return t;
}
