// lm-eval super_glue/boolq: "{passage}\nQuestion: {question}?\nAnswer:" → " no" | " yes", acc.
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
      gold: field<number>(r, "label", isInt, w),
    };
  },
};
