// Text sources for perplexity, calibration and training: WikiText-2 (HF "\n\n"-joined raw test split), C4 validation
// documents (parquet via hyparquet), TinyStories, jsonl/txt/parquet files. Everything resolves under PERP_DATA.
import { existsSync, readFileSync } from "node:fs";
import { asyncBufferFromFile, parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { DataError, requireData } from "./data.js";
import type { Tokenizer } from "./tokenizer.js";

export const C4_PATH = ["datasets", "c4", "c4-validation-2k.parquet"];

export async function readParquetTexts(path: string, column = "text"): Promise<string[]> {
  if (!existsSync(path)) throw new DataError(`${path}: file not found`);
  const file = await asyncBufferFromFile(path);
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({ file, columns: [column], compressors })) as Record<string, unknown>[];
  } catch (e) {
    throw new DataError(`${path}: cannot read column '${column}' (${(e as Error).message})`);
  }
  return rows.map((r, i) => {
    const v = r[column];
    if (typeof v !== "string") throw new DataError(`${path}: row ${i} has no string '${column}'`);
    return v;
  });
}

export function readJsonlTexts(path: string, field = "text"): string[] {
  return readJsonl(path).map((r, i) => {
    const v = (r as Record<string, unknown>)[field];
    if (typeof v !== "string") throw new DataError(`${path}:${i + 1}: missing string field '${field}'`);
    return v;
  });
}

export function readJsonl(path: string): unknown[] {
  if (!existsSync(path)) throw new DataError(`${path}: file not found`);
  const out: unknown[] = [];
  readFileSync(path, "utf8")
    .split("\n")
    .forEach((line, i) => {
      if (!line.trim()) return;
      try {
        out.push(JSON.parse(line));
      } catch (e) {
        throw new DataError(`${path}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
    });
  return out;
}

export async function c4Documents(): Promise<string[]> {
  return readParquetTexts(requireData(...C4_PATH));
}

/** The named evaluation texts, exactly as the reference protocols build them. */
export async function evalText(name: string): Promise<string> {
  switch (name) {
    case "wikitext2":
      return readFileSync(requireData("datasets", "wikitext-2-raw-v1", "test.txt"), "utf8");
    case "c4":
      // SparseGPT/PERP: ' '.join(first 1100 validation documents), then the first 256 windows (perplexity.ts).
      return (await c4Documents()).slice(0, 1100).join(" ");
    case "tinystories":
      return readFileSync(requireData("datasets", "tinystories", "validation.txt"), "utf8");
    default:
      throw new DataError(`unknown dataset '${name}' (known: wikitext2, c4, tinystories; or use --text-file)`);
  }
}

/**
 * A calibration/training text source, in one of two shapes, as the reference code draws windows from each:
 * - `documents` (c4, *.jsonl, *.parquet): separate documents; a window lies inside one document long enough for it
 *   (SparseGPT's / wanda's `get_c4`);
 * - `stream` (wikitext2, tinystories, *.txt): one continuous text, tokenized once; a window starts anywhere in the
 *   token stream (their `get_wikitext2`). Paragraphs of these texts are far shorter than a 2048-token context.
 */
export type TextSource = { kind: "documents"; docs: string[] } | { kind: "stream"; text: string };

export async function textSource(source: string): Promise<TextSource> {
  if (source === "c4") return { kind: "documents", docs: await c4Documents() };
  if (source === "wikitext2" || source === "tinystories") return { kind: "stream", text: await evalText(source) };
  if (source.endsWith(".parquet")) return { kind: "documents", docs: await readParquetTexts(source) };
  if (source.endsWith(".jsonl")) return { kind: "documents", docs: readJsonlTexts(source) };
  if (existsSync(source)) {
    let text: string;
    try {
      text = readFileSync(source, "utf8");
    } catch (e) {
      throw new DataError(`${source}: cannot read (${(e as Error).message})`);
    }
    return { kind: "stream", text };
  }
  throw new DataError(`unknown data source '${source}' (c4, wikitext2, tinystories, or a .txt/.jsonl/.parquet file)`);
}

/** A continuous text's tokens, at least one window of seqlen (+ 1 for its last target) long; `what` names it. */
export function streamTokens(tok: Tokenizer, text: string, seqlen: number, what: string, flag: string): number[] {
  const t = tok.encode(text);
  if (t.length < seqlen + 1)
    throw new DataError(
      `${what} has ${t.length} tokens, fewer than a window needs (seqlen + 1 = ${seqlen + 1}); lower ${flag}`,
    );
  return t;
}
