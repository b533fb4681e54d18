// lm-eval hellaswag: query = preprocess(activity_label + ": " + ctx), choices = preprocess(ending), acc + acc_norm.
// Our copy has `ctx` = ctx_a + " " + ctx_b already joined (no ctx_b.capitalize(), which lm-eval applies) and already
// preprocessed once; preprocess is idempotent except for 18 rows with other bracketed spans, which it removes.
import { field, isStr, isStrList, type Task } from "./types.js";

export function preprocess(text: string): string {
  return text
    .trim()
    .replaceAll(" [title]", ". ")
    .replace(/\[.*?\]/g, "")
    .replaceAll("  ", " ");
}

export const hellaswag: Task = {
  name: "hellaswag",
  file: ["tasks", "hellaswag", "validation.jsonl"],
  metrics: ["acc", "acc_norm"],
  delimiter: " ",
  toDoc(r) {
    const w = "hellaswag";
    const label = field<string>(r, "label", (v) => isStr(v) && /^[0-3]$/.test(v as string), w);
    return {
      context: preprocess(`${field(r, "activity_label", isStr, w)}: ${field(r, "ctx", isStr, w)}`),
      choices: field<string[]>(r, "endings", isStrList, w).map(preprocess),
      gold: Number(label),
    };
  },
};
