// lm-eval winogrande (multiple_inputs, partial evaluation): for each option the context is the sentence up to "_"
// with the option substituted; the shared continuation is the rest after "_", stripped; acc.
import { DataError } from "../../io/data.js";
import { field, isStr, type Task } from "./types.js";

export const winogrande: Task = {
  name: "winogrande",
  file: ["tasks", "winogrande", "validation.jsonl"],
  metrics: ["acc"],
  delimiter: " ",
  multipleInputs: true,
  toDoc(r) {
    const w = "winogrande";
    const s = field<string>(r, "sentence", isStr, w);
    const i = s.indexOf("_");
    if (i < 0) throw new DataError(`${w}: sentence has no '_' blank`);
    const answer = field<string>(r, "answer", (v) => v === "1" || v === "2", w);
    return {
      context: [s.slice(0, i) + field(r, "option1", isStr, w), s.slice(0, i) + field(r, "option2", isStr, w)],
      choices: [s.slice(i + 1).trim()],
      gold: answer === "1" ? 0 : 1,
    };
  },
};
