// lm-eval arc_easy / arc_challenge: "Question: {question}\nAnswer:" → " {choice}", gold = label index; acc + acc_norm.
import { DataError } from "../../io/data.js";
import { field, isChoices, isStr, type Task } from "./types.js";

function arc(name: string, dir: string): Task {
  return {
    name,
    file: ["tasks", dir, "validation.jsonl"],
    metrics: ["acc", "acc_norm"],
    delimiter: " ",
    toDoc(r) {
      const c = field<{ text: string[]; label: string[] }>(r, "choices", isChoices, name);
      const gold = c.label.indexOf(field<string>(r, "answerKey", isStr, name));
      if (gold < 0) throw new DataError(`${name}: answerKey not among the choice labels`);
      return { context: `Question: ${field(r, "question", isStr, name)}\nAnswer:`, choices: c.text, gold };
    },
  };
}

export const arcEasy = arc("arc_easy", "arc_easy");
export const arcChallenge = arc("arc_challenge", "arc_challenge");
