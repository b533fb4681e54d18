// lm-eval piqa: "Question: {goal}\nAnswer:" → " {sol1}" | " {sol2}"; acc + acc_norm.
import { field, isInt, isStr, type Task } from "./types.js";

export const piqa: Task = {
  name: "piqa",
  file: ["tasks", "piqa", "validation.jsonl"],
  metrics: ["acc", "acc_norm"],
  delimiter: " ",
  toDoc(r) {
    const w = "piqa";
    return {
      context: `Question: ${field(r, "goal", isStr, w)}\nAnswer:`,
      choices: [field<string>(r, "sol1", isStr, w), field<string>(r, "sol2", isStr, w)],
      gold: field<number>(r, "label", isInt, w),
    };
  },
};
