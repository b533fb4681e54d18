// Training windows: a seeded sampler, each window `seqlen` tokens at a random start. From documents (c4, .jsonl,
// .parquet; calibration documents excluded): inside a random document longer than seqlen. From a continuous text
// (wikitext2, tinystories, .txt): anywhere in its token stream, the text tokenized once. Its state is the number of
// windows drawn, so a resumed run re-draws exactly the same sequence.
import { DataError } from "../io/data.js";
import { streamTokens, type TextSource } from "../io/datasets.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { Rng } from "../tensor/rng.js";

export class WindowSampler {
  private rng: Rng;
  private readonly cache = new Map<number, number[]>();
  private readonly docs: string[];
  private readonly eligible: number[];
  /** A continuous text's tokens (null for documents). */
  private readonly stream: number[] | null;
  drawn = 0;

  constructor(
    src: TextSource,
    private readonly tok: Tokenizer,
    readonly seqlen: number,
    readonly seed: number,
    exclude: number[] = [],
  ) {
    this.rng = new Rng(seed ^ 0x5eed);
    if (src.kind === "stream") {
      this.docs = [];
      this.eligible = [];
      this.stream = streamTokens(tok, src.text, seqlen, "the training text", "--seqlen");
      return;
    }
    this.docs = src.docs;
    this.stream = null;
    const ex = new Set(exclude);
    this.eligible = this.docs
      .map((_, i) => i)
      .filter((i) => !ex.has(i) && Buffer.byteLength(this.docs[i], "utf8") + 2 > seqlen);
    if (!this.eligible.length)
      throw new DataError(`no training document is longer than ${seqlen} tokens; lower --seqlen`);
  }

  private enc(i: number): number[] {
    let e = this.cache.get(i);
    if (!e) {
      e = this.tok.encode(this.docs[i]);
      this.cache.set(i, e);
    }
    return e;
  }

  /** One window of seqlen token ids. */
  next(): number[] {
    if (this.stream) {
      const s = this.rng.int(this.stream.length - this.seqlen);
      this.drawn++;
      return this.stream.slice(s, s + this.seqlen);
    }
    for (let tries = 0; tries < 100 * this.eligible.length + 1000; tries++) {
      const d = this.eligible[this.rng.int(this.eligible.length)];
      const t = this.enc(d);
      if (t.length > this.seqlen) {
        const s = this.rng.int(t.length - this.seqlen);
        this.drawn++;
        return t.slice(s, s + this.seqlen);
      }
    }
    throw new DataError(`could not find a document longer than ${this.seqlen} tokens`);
  }

  batch(n: number): Int32Array {
    const out = new Int32Array(n * this.seqlen);
    for (let b = 0; b < n; b++) out.set(this.next(), b * this.seqlen);
    return out;
  }

  /** Re-draws `n` windows from a fresh RNG (resume). */
  fastForward(n: number): void {
    this.rng = new Rng(this.seed ^ 0x5eed);
    this.drawn = 0;
    for (let i = 0; i < n; i++) this.next();
  }
}
