// Calibration windows as wanda/SparseGPT draw them, with `random.seed(seed)` and CPython's own draws (PyRandom), so
// the same text gives the reference code's windows exactly. From documents (c4, .jsonl, .parquet), as get_c4: per
// window a random document (randint over the documents) until one's tokenization is longer than seqlen, then a random
// start randint(0, len − seqlen − 1). From a continuous text (wikitext2, tinystories, .txt), as get_wikitext2: the
// text tokenized once, then per window a start randint(0, len − seqlen − 1) in that token stream.
import { DataError } from "../io/data.js";
import { streamTokens, textSource } from "../io/datasets.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { PyRandom } from "../tensor/pyrandom.js";

export interface CalibrationOptions {
  samples: number;
  seqlen: number;
  seed: number;
  source: string;
}

export interface Calibration {
  /** samples x seqlen token ids. */
  ids: Int32Array;
  samples: number;
  seqlen: number;
  /** Indices of the documents windows were drawn from (retraining excludes them); none for a continuous text. */
  docIndices: number[];
  /** A continuous text's windows: where each starts in its token stream. */
  starts?: number[];
}

export async function calibrationWindows(tok: Tokenizer, o: CalibrationOptions): Promise<Calibration> {
  if (!(o.samples >= 1 && o.seqlen >= 2))
    throw new DataError(`calibration needs samples >= 1 and seqlen >= 2 (got ${o.samples} x ${o.seqlen})`);
  const src = await textSource(o.source);
  const rng = new PyRandom(o.seed);
  const ids = new Int32Array(o.samples * o.seqlen);
  if (src.kind === "stream") {
    const t = streamTokens(tok, src.text, o.seqlen, `calibration source '${o.source}'`, "--calib-seqlen");
    const starts: number[] = [];
    for (let s = 0; s < o.samples; s++) {
      const start = rng.randint(0, t.length - o.seqlen - 1);
      ids.set(t.slice(start, start + o.seqlen), s * o.seqlen);
      starts.push(start);
    }
    return { ids, samples: o.samples, seqlen: o.seqlen, docIndices: [], starts };
  }
  const docs = src.docs;
  if (!docs.length) throw new DataError(`calibration source '${o.source}' has no documents`);
  const cache = new Map<number, number[]>();
  const enc = (i: number) => {
    let e = cache.get(i);
    if (!e) cache.set(i, (e = tok.encode(docs[i])));
    return e;
  };
  // Guard against sources with no long-enough document (the reference would loop forever). A document cannot have
  // more tokens than UTF-8 bytes plus a couple of specials, so a byte count rules most candidates out without encoding.
  const bytes = docs.map((d) => Buffer.byteLength(d, "utf8"));
  const maxBytes = Math.max(...bytes);
  if (maxBytes + 2 <= o.seqlen)
    throw new DataError(
      `calibration source '${o.source}' has no document longer than ${o.seqlen} tokens (the longest has ${maxBytes} bytes); lower --calib-seqlen`,
    );
  const used: number[] = [];
  for (let s = 0; s < o.samples; s++) {
    let doc = -1;
    for (let tries = 0; tries < 20 * docs.length + 1000; tries++) {
      const i = rng.randint(0, docs.length - 1);
      if (bytes[i] + 2 > o.seqlen && enc(i).length > o.seqlen) {
        doc = i;
        break;
      }
    }
    if (doc < 0) {
      const longest = Math.max(...docs.slice(0, 200).map((_, i) => enc(i).length));
      throw new DataError(
        `calibration source '${o.source}' has no document longer than ${o.seqlen} tokens (longest seen: ${longest}); lower --calib-seqlen`,
      );
    }
    const t = enc(doc);
    const start = rng.randint(0, t.length - o.seqlen - 1);
    ids.set(t.slice(start, start + o.seqlen), s * o.seqlen);
    used.push(doc);
  }
  return { ids, samples: o.samples, seqlen: o.seqlen, docIndices: [...new Set(used)].sort((a, b) => a - b) };
}
