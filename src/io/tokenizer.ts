// tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers: the same normalizers, pre-tokenizers,
// models and post-processors as the Rust `tokenizers` crate transformers uses, so BOS/EOS follow each family's files.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";

export class TokenizerError extends Error {}

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

  static fromDir(dir: string): Tokenizer {
    const p = join(dir, "tokenizer.json");
    if (!existsSync(p)) throw new TokenizerError(`${dir}: missing tokenizer.json (perp needs the fast-tokenizer file)`);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(readFileSync(p, "utf8"));
    } catch (e) {
      throw new TokenizerError(`${p}: invalid JSON (${(e as Error).message})`);
    }
    const cp = join(dir, "tokenizer_config.json");
    const config = existsSync(cp) ? (JSON.parse(readFileSync(cp, "utf8")) as Record<string, unknown>) : {};
    return new Tokenizer(json, config);
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
