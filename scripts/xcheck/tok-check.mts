// Cross-check of perp's Tokenizer (the JS @huggingface/tokenizers) against the Rust `tokenizers` library that
// transformers uses: tok_ref.py trains tokenizers of the families' kinds (byte-level BPE as GPT-2 / NeoX, the same
// with OPT's </s> prefix, sentencepiece-style BPE with byte fallback as LLaMA) and writes the ids the Rust library
// gives for test texts (C4, WikiText-2, HellaSwag, edge cases); this compares. Dev check, never CI. Usage:
//   python scripts/xcheck/tok_ref.py <out dir>   (from the repo root, after the demo)
//   node --import tsx scripts/xcheck/tok-check.mts <out dir>
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "../../src/io/tokenizer.js";

const root = process.argv[2];
if (!root) throw new Error("usage: tok-check.mts <dir written by tok_ref.py>");
let bad = 0;
for (const name of readdirSync(root).sort()) {
  const dir = join(root, name);
  const tok = Tokenizer.fromDir(dir);
  const exp = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as {
    text: string;
    ids: number[];
    ids_nospecial: number[];
    decoded: string;
  }[];
  let ok = 0;
  let tokens = 0;
  for (const e of exp) {
    const a = tok.encode(e.text);
    const b = tok.encode(e.text, false);
    const d = tok.decode(e.ids);
    const same = JSON.stringify(a) === JSON.stringify(e.ids) && JSON.stringify(b) === JSON.stringify(e.ids_nospecial);
    if (same && d === e.decoded) ok++;
    else if (bad++ < 5)
      console.log(
        `${name}: ${JSON.stringify(e.text.slice(0, 60))}: ${same ? `decode ${JSON.stringify(d.slice(0, 60))} vs ${JSON.stringify(e.decoded.slice(0, 60))}` : `ids ${a.slice(0, 12)} vs ${e.ids.slice(0, 12)}`}`,
      );
    tokens += e.ids.length;
  }
  console.log(
    `${name.padEnd(12)} ${ok}/${exp.length} texts identical (${tokens} tokens; ids with and without special tokens, decode)`,
  );
}
if (bad) process.exitCode = 1;
