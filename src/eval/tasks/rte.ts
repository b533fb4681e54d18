// lm-eval glue/rte: "{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:" → " True" (0 = entailment) | " False".
import { field, isInt, isStr, type Task } from "./types.js";

export const rte: Task = {
  name: "rte",
  file: ["tasks", "rte", "validation.jsonl"],
  metrics: ["acc"],
  delimiter: " ",
  toDoc(r) {
    const w = "rte";
    return {
      context: `${field(r, "premise", isStr, w)}\nQuestion: ${field(r, "hypothesis", isStr, w)} True or False?\nAnswer:`,
      choices: ["True", "False"],
      gold: field<number>(r, "label", isInt, w),
    };
  },
};
