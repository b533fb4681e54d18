// tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers: the same normalizers, pre-tokenizers,
// models and post-processors as the Rust `tokenizers` crate transformers uses, so BOS/EOS follow each family's files.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";

export class TokenizerError extends Error {}

const SLOW_FILES = ["vocab.json", "merges.txt"];

const tokenContent = (t: unknown): string | null =>
  typeof t === "string" ? t : ((t as { content?: string } | null)?.content ?? null);

/**
 * The tokenizer.json transformers' GPT2Converter builds from a slow GPT-2 / OPT tokenizer (vocab.json + merges.txt,
 * as facebook/opt-* ship): byte-level BPE, `add_prefix_space` from the config, the config's special tokens matched
 * whole, and BOS prepended when the config says `add_bos_token` (OPT), else the byte-level post-processor.
 */
export function byteLevelBpeJson(
  vocab: Record<string, number>,
  merges: string[],
  config: Record<string, unknown>,
): Record<string, unknown> {
  const special = new Map<string, number>();
  const decl = config.added_tokens_decoder as Record<string, { content?: string; special?: boolean }> | undefined;
  for (const [id, t] of Object.entries(decl ?? {})) if (t.content) special.set(t.content, Number(id));
  for (const k of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const c = tokenContent(config[k]);
    if (c && !special.has(c) && vocab[c] !== undefined) special.set(c, vocab[c]);
  }
  const added = [...special].map(([content, id]) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: true,
    special: true,
  }));
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: config.add_prefix_space === true,
    trim_offsets: true,
    use_regex: true,
  };
  const bos = tokenContent(config.bos_token);
  let post: Record<string, unknown> = {
    type: "ByteLevel",
    add_prefix_space: true,
    trim_offsets: false,
    use_regex: true,
  };
  if (config.add_bos_token === true) {
    if (!bos || vocab[bos] === undefined)
      throw new TokenizerError(`tokenizer_config.json asks for add_bos_token but its bos_token is not in vocab.json`);
    const st = (type_id: number) => ({ SpecialToken: { id: bos, type_id } });
    const seq = (id: string, type_id: number) => ({ Sequence: { id, type_id } });
    post = {
      type: "TemplateProcessing",
      single: [st(0), seq("A", 0)],
      pair: [st(0), seq("A", 0), seq("B", 1)],
      special_tokens: { [bos]: { id: bos, ids: [vocab[bos]], tokens: [bos] } },
    };
  }
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: post,
    decoder: { ...byteLevel, add_prefix_space: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

export class Tokenizer {
  private readonly tok: HfTokenizer;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly vocabSize: number;

  constructor(
    readonly json: Record<string, unknown>,
    readonly config: Record<string, unknown>,
  ) {
    this.tok = new HfTokenizer(json as never, config as never);
    const vocab = ((json.model as { vocab?: Record<string, number> | unknown[] })?.vocab ?? {}) as
      | Record<string, number>
      | unknown[];
    this.vocabSize = Array.isArray(vocab) ? vocab.length : Object.keys(vocab).length;
    const idOf = (t: unknown): number | null => {
      const s = typeof t === "string" ? t : (t as { content?: string } | null)?.content;
      if (!s) return null;
      const ids = this.tok.encode(s, { add_special_tokens: false }).ids;
      return ids.length === 1 ? ids[0] : null;
    };
    this.bosId = idOf(config.bos_token);
    this.eosId = idOf(config.eos_token);
  }

  /** Whether `dir` holds a tokenizer perp can read: tokenizer.json, or GPT-2-style vocab.json + merges.txt. */
  static existsIn(dir: string): boolean {
    return existsSync(join(dir, "tokenizer.json")) || SLOW_FILES.every((f) => existsSync(join(dir, f)));
  }

  static fromDir(dir: string): Tokenizer {
    const readJson = (p: string): Record<string, unknown> => {
      try {
        return JSON.parse(readFileSync(p, "utf8"));
      } catch (e) {
        throw new TokenizerError(`${p}: invalid JSON (${(e as Error).message})`);
      }
    };
    const cp = join(dir, "tokenizer_config.json");
    const config = existsSync(cp) ? readJson(cp) : {};
    const p = join(dir, "tokenizer.json");
    if (existsSync(p)) return new Tokenizer(readJson(p), config);
    if (!Tokenizer.existsIn(dir))
      throw new TokenizerError(
        `${dir}: missing tokenizer.json (perp needs the fast-tokenizer file, or GPT-2-style vocab.json + merges.txt)`,
      );
    // Special tokens may sit in special_tokens_map.json only (older saves); tokenizer_config.json wins.
    const sp = join(dir, "special_tokens_map.json");
    const merged = { ...(existsSync(sp) ? readJson(sp) : {}), ...config };
    const merges = readFileSync(join(dir, "merges.txt"), "utf8")
      .split(/\r?\n/)
      .filter((l) => l.trim() && !l.startsWith("#version"));
    return new Tokenizer(
      byteLevelBpeJson(readJson(join(dir, "vocab.json")) as Record<string, number>, merges, merged),
      merged,
    );
  }

  /** Token ids as transformers' tokenizer(text) gives them (special tokens per the family's post-processor). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /** Text of `ids` as transformers decodes it (no space clean-up unless tokenizer_config.json asks for it, the
   * default since transformers 4.45); an empty list gives "". */
  decode(ids: number[], skipSpecialTokens = true): string {
    if (!ids.length) return "";
    return this.tok.decode(ids, {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: this.config.clean_up_tokenization_spaces === true,
    });
  }
}
