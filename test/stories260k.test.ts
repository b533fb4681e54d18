// The one real LLaMA model we have: stories260K (llama2.c) imported, logits vs PyTorch, greedy generation.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dataPath } from "../src/io/data.js";
import { ImportError, importLlama2c } from "../src/io/llama2c.js";
import { Tokenizer } from "../src/io/tokenizer.js";
import { generate, nextLogits } from "../src/models/generate.js";
import { loadModel } from "../src/models/load.js";

const MODEL = dataPath("models", "stories260K", "stories260K.bin");
const TOK = dataPath("models", "stories260K", "tok512.bin");
const REF = join(dataPath(), "..", "refs", "stories260k_logits.json");
const have = existsSync(MODEL) && existsSync(REF);

describe.skipIf(!have)("stories260K", () => {
  const out = join(mkdtempSync(join(tmpdir(), "perp-s260-")), "hf");
  const ref = have ? JSON.parse(readFileSync(REF, "utf8")) : {};

  it("imports to an HF folder whose tokenizer and logits match PyTorch (≤ 1e-4)", async () => {
    const cfg = importLlama2c(MODEL, TOK, out);
    expect(cfg).toMatchObject({
      model_type: "llama",
      hidden_size: 64,
      num_hidden_layers: 5,
      num_key_value_heads: 4,
      tie_word_embeddings: true,
    });
    for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
      expect(existsSync(join(out, f))).toBe(true);
    const m = await loadModel(out);
    const ids = m.tokenizer?.encode(ref.prompt);
    expect(ids).toEqual(ref.token_ids);
    const logits = nextLogits(m.model, ref.token_ids);
    let maxd = 0;
    ref.final_logits_first16.forEach((v: number, i: number) => {
      maxd = Math.max(maxd, Math.abs(logits[i] - v));
    });
    expect(maxd).toBeLessThanOrEqual(1e-4);
    let am = 0;
    let mx = Number.NEGATIVE_INFINITY;
    let sum = 0;
    let l2 = 0;
    logits.forEach((v, i) => {
      if (v > logits[am]) am = i;
      mx = Math.max(mx, v);
      sum += v;
      l2 += v * v;
    });
    const lse = mx + Math.log(logits.reduce((a, v) => a + Math.exp(v - mx), 0));
    expect(am).toBe(ref.final_logits_argmax);
    expect(Math.abs(lse - ref.final_logits_logsumexp)).toBeLessThanOrEqual(1e-4);
    expect(Math.abs(sum - ref.final_logits_sum)).toBeLessThan(1e-2);
    expect(Math.abs(Math.sqrt(l2) - ref.final_logits_l2)).toBeLessThan(1e-3);
  });

  it("greedy generation from BOS reproduces llama2.c's 60 tokens; from 'Once upon a time' reads as a story", async () => {
    if (!existsSync(join(out, "config.json"))) importLlama2c(MODEL, TOK, out);
    const m = await loadModel(out);
    const expected = [
      403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419,
      292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391,
      266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415,
    ];
    expect([...generate(m.model, [1], { maxNewTokens: 60 })]).toEqual(expected);
    const tok = m.tokenizer!;
    const prompt = tok.encode("Once upon a time");
    const text = tok.decode([...prompt, ...generate(m.model, prompt, { maxNewTokens: 30 })]);
    expect(text.startsWith("Once upon a time, there was a little girl named Lily.")).toBe(true);
    // Decoding as transformers does: no space clean-up unless tokenizer_config.json asks for it; nothing gives "".
    const spaced = 'Lily said , "yes !" and ran .';
    expect(tok.decode(tok.encode(spaced))).toBe(spaced);
    expect(new Tokenizer(tok.json, {}).decode(tok.encode(spaced))).toBe(spaced); // key absent: no clean-up either
    expect(tok.decode([])).toBe("");
  });

  it("the CLI imports and generates (streaming)", () => {
    const dir = join(mkdtempSync(join(tmpdir(), "perp-cli-")), "m");
    const run = (args: string[]) =>
      execFileSync(process.execPath, ["--import", "tsx", "src/cli/run.ts", ...args], { encoding: "utf8" });
    expect(run(["import", "llama2c", MODEL, TOK, "--out", dir])).toMatch(/wrote .*5 layers, hidden 64, vocab 512/);
    const txt = run(["generate", "--model", dir, "--prompt", "Once upon a time", "--max-new-tokens", "20"]);
    expect(txt).toMatch(/^Once upon a time, there was a little girl/);
  });

  it("bad llama2.c input: truncated checkpoint, missing tokenizer", () => {
    const dir = mkdtempSync(join(tmpdir(), "perp-bad-"));
    const bad = join(dir, "bad.bin");
    writeFileSync(bad, readFileSync(MODEL).subarray(0, 5000));
    expect(() => importLlama2c(bad, TOK, join(dir, "o"))).toThrow(ImportError);
    expect(() => importLlama2c(bad, TOK, join(dir, "o"))).toThrow(
      /bad.bin: 5000 bytes, but the header .* implies 1056540/,
    );
    expect(() => importLlama2c(MODEL, join(dir, "none.bin"), join(dir, "o2"))).toThrow(/tokenizer file not found/);
    expect(existsSync(join(dir, "o2", "config.json"))).toBe(false);
  });
});
