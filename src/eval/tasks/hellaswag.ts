// lm-eval hellaswag: ctx = ctx_a + " " + ctx_b.capitalize(), query = preprocess(activity_label + ": " + ctx), choices =
// preprocess(ending), acc + acc_norm. Rows in the full HF schema carry ctx_a / ctx_b and get exactly that; our shipped
// copy has only `ctx` (ctx_a + " " + ctx_b joined, without the capitalize) and is used as it is. preprocess is
// idempotent on it except for 18 rows with other bracketed spans, which it removes.
import { field, isStr, isStrList, type Task } from "./types.js";

export function preprocess(text: string): string {
  return text
    .trim()
    .replaceAll(" [title]", ". ")
    .replace(/\[.*?\]/g, "")
    .replaceAll("  ", " ");
}

/** Python's str.capitalize(): the first character upper-cased, the rest lower-cased. */
export function capitalize(s: string): string {
  return s.length ? s[0].toUpperCase() + s.slice(1).toLowerCase() : s;
}

export const hellaswag: Task = {
  name: "hellaswag",
  file: ["tasks", "hellaswag", "validation.jsonl"],
  metrics: ["acc", "acc_norm"],
  delimiter: " ",
  toDoc(r) {
    const w = "hellaswag";
    const label = field<string>(r, "label", (v) => isStr(v) && /^[0-3]$/.test(v as string), w);
    const ctx =
      isStr(r.ctx_a) && isStr(r.ctx_b)
        ? `${r.ctx_a} ${capitalize(r.ctx_b as string)}`
        : field<string>(r, "ctx", isStr, w);
    return {
      context: preprocess(`${field(r, "activity_label", isStr, w)}: ${ctx}`),
      choices: field<string[]>(r, "endings", isStrList, w).map(preprocess),
      gold: Number(label),
    };
  },
};
