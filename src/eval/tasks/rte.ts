// lm-eval glue/rte: "{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:" → " True" (0 = entailment) | " False".
// Rows in either schema: super_glue's premise / hypothesis or glue's sentence1 / sentence2 (same labels).
import { field, fieldOf, isInt, isStr, type Task } from "./types.js";

export const rte: Task = {
  name: "rte",
  file: ["tasks", "rte", "validation.jsonl"],
  metrics: ["acc"],
  delimiter: " ",
  toDoc(r) {
    const w = "rte";
    return {
      context: `${fieldOf(r, ["premise", "sentence1"], isStr, w)}\nQuestion: ${fieldOf(r, ["hypothesis", "sentence2"], isStr, w)} True or False?\nAnswer:`,
      choices: ["True", "False"],
      gold: field<number>(r, "label", isInt, w),
    };
  },
};
