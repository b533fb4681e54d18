// lm-eval super_glue/boolq: "{passage}\nQuestion: {question}?\nAnswer:" → " no" | " yes", acc. Rows in super_glue's
// schema (label 0/1) or google/boolq's (answer false/true).
import { field, isInt, isStr, type Task } from "./types.js";

export const boolq: Task = {
  name: "boolq",
  file: ["tasks", "boolq", "validation.jsonl"],
  metrics: ["acc"],
  delimiter: " ",
  toDoc(r) {
    const w = "boolq";
    return {
      context: `${field(r, "passage", isStr, w)}\nQuestion: ${field(r, "question", isStr, w)}?\nAnswer:`,
      choices: ["no", "yes"],
      gold:
        r.label === undefined && typeof r.answer === "boolean" ? Number(r.answer) : field<number>(r, "label", isInt, w),
    };
  },
};
