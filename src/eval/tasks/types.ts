// A zero-shot multiple-choice task as lm-evaluation-harness defines it: a context (or one per choice, for
// `multiple_inputs` tasks such as winogrande), continuations joined by the target delimiter, the gold index, metrics.
import { DataError } from "../../io/data.js";

export interface McDoc {
  /** One context for all choices, or one context per choice (multiple_inputs). */
  context: string | string[];
  /** The choice strings (without the delimiter); for multiple_inputs the single shared continuation is choices[0]. */
  choices: string[];
  gold: number;
}

export interface Task {
  name: string;
  /** Path under the data directory. */
  file: string[];
  metrics: ("acc" | "acc_norm")[];
  delimiter: string;
  multipleInputs?: boolean;
  toDoc(row: Record<string, unknown>): McDoc;
}

/** Field accessor that names the file and line of a malformed row. */
export function field<T>(row: Record<string, unknown>, name: string, check: (v: unknown) => boolean, where: string): T {
  const v = row[name];
  if (!check(v)) throw new DataError(`${where}: missing or malformed field '${name}'`);
  return v as T;
}

/** The first of `names` the row has (the same field under another dataset's schema), else field()'s error on it. */
export function fieldOf<T>(
  row: Record<string, unknown>,
  names: string[],
  check: (v: unknown) => boolean,
  where: string,
): T {
  const name = names.find((n) => row[n] !== undefined) ?? names[0];
  return field<T>(row, name, check, where);
}

export const isStr = (v: unknown) => typeof v === "string";
export const isInt = (v: unknown) => Number.isInteger(v);
export const isStrList = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === "string");
export const isChoices = (v: unknown) =>
  typeof v === "object" &&
  v !== null &&
  isStrList((v as { text?: unknown }).text) &&
  isStrList((v as { label?: unknown }).label);
