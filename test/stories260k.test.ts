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

  it("reads llama2.c's v1 (float32) and v2 (Q8_0) exports as run.c / runq.c do", async () => {
    // Re-export stories260K (v0) in export.py's version-1 and version-2 layouts, written here independently.
    const v0 = readFileSync(MODEL);
    const [dim, hid, L, H, KV, vs, S] = [0, 1, 2, 3, 4, 5, 6].map((i) => v0.readInt32LE(4 * i));
    const V = Math.abs(vs);
    const D = dim / H;
    const f = new Float32Array(v0.buffer.slice(v0.byteOffset + 28));
    let o = 0;
    const next = (n: number) => f.slice(o, (o += n));
    const emb = next(V * dim);
    const rmsAtt = next(L * dim);
    const per = (n: number) => Array.from({ length: L }, () => next(n));
    const [wq, wk, wv, wo] = [per(dim * dim), per(KV * D * dim), per(KV * D * dim), per(dim * dim)];
    const rmsFfn = next(L * dim);
    const [w1, w2, w3] = [per(hid * dim), per(dim * hid), per(hid * dim)];
    const rmsFinal = next(dim);
    const header = (version: number, gs = 0) => {
      const b = Buffer.alloc(256);
      b.writeUInt32LE(0x616b3432, 0);
      b.writeInt32LE(version, 4);
      for (const [i, v] of [dim, hid, L, H, KV, V, S].entries()) b.writeInt32LE(v, 8 + 4 * i);
      b.writeUInt8(1, 36); // shared classifier
      if (version === 2) b.writeInt32LE(gs, 37);
      return b;
    };
    const mats = [emb, ...wq, ...wk, ...wv, ...wo, ...w1, ...w2, ...w3];
    const f32 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    const dir = mkdtempSync(join(tmpdir(), "perp-l2c-"));
    writeFileSync(join(dir, "v1.bin"), Buffer.concat([header(1), ...[rmsAtt, rmsFfn, rmsFinal, ...mats].map(f32)]));
    // Q8_0 in groups of 32: int8 = round(w / s), s = max|w| / 127; each tensor's int8 values, then its scales.
    const gs = 32;
    const deq: Float32Array[] = [];
    const parts = [header(2, gs), ...[rmsAtt, rmsFfn, rmsFinal].map(f32)];
    for (const w of mats) {
      const q = new Int8Array(w.length);
      const s = new Float32Array(w.length / gs);
      const d = new Float32Array(w.length);
      for (let g = 0; g < s.length; g++) {
        let mx = 0;
        for (let i = 0; i < gs; i++) mx = Math.max(mx, Math.abs(w[g * gs + i]));
        s[g] = mx / 127;
        for (let i = 0; i < gs; i++) {
          q[g * gs + i] = Math.round(w[g * gs + i] / s[g]);
          d[g * gs + i] = q[g * gs + i] * s[g];
        }
      }
      parts.push(Buffer.from(q.buffer), f32(s));
      deq.push(d);
    }
    writeFileSync(join(dir, "v2.bin"), Buffer.concat(parts));
    const tensors = async (d: string) => (await loadModel(d)).model.namedParameters();
    if (!existsSync(join(out, "config.json"))) importLlama2c(MODEL, TOK, out);
    const base = new Map([...(await tensors(out))].map(([n, p]) => [n, p.data]));
    importLlama2c(join(dir, "v1.bin"), TOK, join(dir, "o1"));
    const c2 = importLlama2c(join(dir, "v2.bin"), TOK, join(dir, "o2"));
    expect(c2).toMatchObject({ hidden_size: dim, num_hidden_layers: L, tie_word_embeddings: true });
    for (const [n, p] of await tensors(join(dir, "o1"))) expect(p.data, n).toEqual(base.get(n));
    const m2 = new Map([...(await tensors(join(dir, "o2")))].map(([n, p]) => [n, p.data]));
    expect(m2.get("model.embed_tokens.weight")).toEqual(deq[0]);
    expect(m2.get("model.layers.2.self_attn.v_proj.weight")).toEqual(deq[1 + 2 * L + 2]);
    expect(m2.get("model.layers.4.mlp.up_proj.weight")).toEqual(deq[1 + 7 * L - 1]);
    expect(m2.get("model.norm.weight")).toEqual(rmsFinal);
    // Quantized weights, same model: the logits move by quantization error only.
    const a = nextLogits((await loadModel(out)).model, ref.token_ids);
    const b = nextLogits((await loadModel(join(dir, "o2"))).model, ref.token_ids);
    let d = 0;
    a.forEach((v, i) => {
      d = Math.max(d, Math.abs(v - b[i]));
    });
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThan(0.5);
    // A version this reader does not know, and a v1 file cut short, are refused by name.
    const bad = Buffer.concat([header(3), ...[rmsAtt].map(f32)]);
    writeFileSync(join(dir, "v3.bin"), bad);
    expect(() => importLlama2c(join(dir, "v3.bin"), TOK, join(dir, "o3"))).toThrow(/export version 3 is not supported/);
    writeFileSync(join(dir, "v1cut.bin"), readFileSync(join(dir, "v1.bin")).subarray(0, 9000));
    expect(() => importLlama2c(join(dir, "v1cut.bin"), TOK, join(dir, "o4"))).toThrow(/9000 bytes, but the header/);
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
