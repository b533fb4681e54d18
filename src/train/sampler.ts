// Training windows: a seeded sampler over documents (calibration documents excluded), each window `seqlen` tokens
// from a random document longer than seqlen at a random start. Its state is the number of windows drawn, so a
// resumed run re-draws exactly the same sequence.
import { DataError } from "../io/data.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { Rng } from "../tensor/rng.js";

export class WindowSampler {
  private rng: Rng;
  private readonly cache = new Map<number, number[]>();
  private readonly eligible: number[];
  drawn = 0;

  constructor(
    private readonly docs: string[],
    private readonly tok: Tokenizer,
    readonly seqlen: number,
    readonly seed: number,
    exclude: number[] = [],
  ) {
    const ex = new Set(exclude);
    this.eligible = docs.map((_, i) => i).filter((i) => !ex.has(i) && Buffer.byteLength(docs[i], "utf8") + 2 > seqlen);
    if (!this.eligible.length)
      throw new DataError(`no training document is longer than ${seqlen} tokens; lower --seqlen`);
    this.rng = new Rng(seed ^ 0x5eed);
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
