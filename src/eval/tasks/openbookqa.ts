// lm-eval openbookqa: context = question_stem, choices = choices.text, gold = label index of answerKey; acc + acc_norm.
import { DataError } from "../../io/data.js";
import { field, isChoices, isStr, type Task } from "./types.js";

export const openbookqa: Task = {
  name: "openbookqa",
  file: ["tasks", "openbookqa", "validation.jsonl"],
  metrics: ["acc", "acc_norm"],
  delimiter: " ",
  toDoc(r) {
    const w = "openbookqa";
    const c = field<{ text: string[]; label: string[] }>(r, "choices", isChoices, w);
    const gold = c.label.indexOf(field<string>(r, "answerKey", isStr, w).trimStart());
    if (gold < 0) throw new DataError(`${w}: answerKey not among the choice labels`);
    return { context: field<string>(r, "question_stem", isStr, w), choices: c.text, gold };
  },
};
