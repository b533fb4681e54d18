// Retraining: gradient checks of every subset and LoRA type, exact sparsity after train + merge, frozen-weight
// backward without dW GEMMs, schedule, resume after kill -9, bad input.
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dataPath } from "../src/io/data.js";
import { llama2cTokenizerJson, readLlama2cTokenizer } from "../src/io/llama2c.js";
import { saveCheckpoint as saveST } from "../src/io/safetensors.js";
import type { Tokenizer } from "../src/io/tokenizer.js";
import { loadModel } from "../src/models/load.js";
import { buildModel } from "../src/models/registry.js";
import * as F from "../src/nn/functional.js";
import { Linear, LORA_TYPES, type LoraType } from "../src/nn/layers.js";
import { backward, gradStats, noGrad } from "../src/nn/tape.js";
import { configureTrainable, mergeAdapters, parseSubsets, prunableLinears, type Subset } from "../src/peft/select.js";
import { prune, savePruned } from "../src/prune/index.js";
import { isNative, K } from "../src/tensor/native.js";
import { Rng } from "../src/tensor/rng.js";
import { Tensor } from "../src/tensor/tensor.js";
import { reconstruct } from "../src/train/reconstruct.js";
import { retrainModel } from "../src/train/retrain-model.js";
import { WindowSampler } from "../src/train/sampler.js";
import { lrAt, warmupSteps } from "../src/train/schedule.js";
import { MICRO_LLAMA, writeTinyLlama } from "./fixtures.js";
import { randF32 } from "./helpers.js";

/** Finite-difference check of d(Σ y·R)/dθ for every trainable tensor of a Linear with an adapter. */
function gradcheckLinear(type: LoraType, inOut: boolean): void {
  const [inF, outF, M] = [6, 5, 3];
  const lin = new Linear(inF, outF, { bias: true, inOut });
  lin.weight.data = randF32(inF * outF, 1);
  lin.mask = Uint8Array.from({ length: inF * outF }, (_, i) => (i % 3 ? 1 : 0));
  lin.applyMask();
  lin.requiresGrad(false);
  const ad = lin.addLora(2, 4, new Rng(1), type);
  ad.B.data = randF32(ad.B.size, 2); // non-zero so every path is exercised
  ad.A.data = randF32(ad.A.size, 3);
  for (const p of [ad.A, ad.B, lin.bias as Tensor]) p.requiresGrad = true;
  const x = randF32(M * inF, 4);
  const R = randF32(M * outF, 5);
  const f = () => noGrad(() => lin.forward(new Tensor(x.slice(), [M, inF])).data).reduce((s, v, i) => s + v * R[i], 0);
  const y = lin.forward(new Tensor(x.slice(), [M, inF]));
  backward(y, R);
  for (const p of [ad.A, ad.B, lin.bias as Tensor]) {
    const g = p.grad as Float32Array;
    for (let i = 0; i < p.size; i++) {
      const v = p.data[i];
      const h = 1e-2;
      p.data[i] = v + h;
      const a = f();
      p.data[i] = v - h;
      const b = f();
      p.data[i] = v;
      const fd = (a - b) / (2 * h);
      expect(Math.abs(g[i] - fd)).toBeLessThan(2e-3 * (1 + Math.abs(fd)));
    }
  }
  expect(lin.weight.grad).toBeNull();
}

describe("adapters", () => {
  for (const type of LORA_TYPES)
    for (const inOut of [false, true])
      it(`${type}${inOut ? " (Conv1D layout)" : ""}: gradients match finite differences; merge keeps pruned positions exact`, () => {
        gradcheckLinear(type, inOut);
        const lin = new Linear(8, 4, { inOut });
        lin.weight.data = randF32(32, 7);
        lin.mask = Uint8Array.from({ length: 32 }, (_, i) => (i % 2 ? 1 : 0));
        lin.applyMask();
        const ad = lin.addLora(2, 3.3, new Rng(2), type); // s = 1.65: scale products round in float32
        ad.B.data = randF32(ad.B.size, 8);
        const x = new Tensor(randF32(16, 9), [2, 8]);
        const before = noGrad(() => lin.forward(x).data);
        lin.mergeLora();
        expect(lin.lora).toBeNull();
        const after = noGrad(() => lin.forward(x).data);
        if (type === "mask_lora" || type === "scale_lora")
          expect(Array.from(after)).toEqual(Array.from(before)); // the trained effective weight, bit for bit
        else if (type === "lora")
          for (let i = 0; i < before.length; i++) expect(Math.abs(after[i] - before[i])).toBeLessThan(1e-5);
        const zeros = lin.weight.data.filter((v, i) => !lin.mask?.[i] && v === 0).length;
        if (type === "lora") expect(zeros).toBeLessThan(16);
        else expect(zeros).toBe(16);
      });

  it("scale_lora starts at the identity (BA = all ones)", () => {
    const lin = new Linear(8, 4);
    lin.weight.data = randF32(32, 1);
    const x = new Tensor(randF32(16, 2), [2, 8]);
    const y0 = noGrad(() => lin.forward(x).data);
    lin.addLora(4, 8, new Rng(0), "scale_lora");
    const y1 = noGrad(() => lin.forward(x).data);
    for (let i = 0; i < y0.length; i++) expect(Math.abs(y1[i] - y0[i])).toBeLessThan(1e-6);
  });

  it("the linear schedule with warmup follows transformers (first step lr 0)", () => {
    expect(warmupSteps(100, 0.1)).toBe(10);
    // transformers' Trainer rounds up (get_warmup_steps: ceil), PERP's reconstruct loop down (int())
    expect(warmupSteps(12, 0.1)).toBe(2);
    expect(warmupSteps(12, 0.1, "floor")).toBe(1);
    expect(warmupSteps(3, 0.1)).toBe(1);
    expect(lrAt(0, 100, 10, 1)).toBe(0);
    expect(lrAt(5, 100, 10, 1)).toBe(0.5);
    expect(lrAt(10, 100, 10, 1)).toBe(1);
    expect(lrAt(55, 100, 10, 1)).toBe(0.5);
    expect(lrAt(0, 10, 0, 2)).toBe(2);
  });

  it("unknown subsets and LoRA types list the valid ones", () => {
    expect(() => parseSubsets("norm,bais")).toThrow(/unknown subset 'bais' \(valid: bias, norm, head, lora, full\)/);
  });
});

// --------------------------------------------------------------------------- tiny model end to end
const TOK = dataPath("models", "stories260K", "tok512.bin");
const have = existsSync(TOK);

function writeTiny(dir: string, family: "llama" | "opt"): void {
  if (family === "llama") {
    writeTinyLlama(dir);
    return;
  }
  const rng = new Rng(3);
  const C = 16;
  const ts: { name: string; dtype: "F32"; shape: number[]; data: Float32Array }[] = [];
  const add = (name: string, shape: number[], fill?: number) =>
    ts.push({
      name,
      dtype: "F32",
      shape,
      data:
        fill !== undefined
          ? new Float32Array(shape.reduce((a, b) => a * b)).fill(fill)
          : (rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b)), 0.2) as Float32Array),
    });
  add("model.decoder.embed_tokens.weight", [512, C]);
  add("model.decoder.embed_positions.weight", [66, C]);
  add("model.decoder.final_layer_norm.weight", [C], 1);
  add("model.decoder.final_layer_norm.bias", [C], 0);
  for (let l = 0; l < 2; l++) {
    const p = `model.decoder.layers.${l}.`;
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      add(`${p}self_attn.${n}.weight`, [C, C]);
      add(`${p}self_attn.${n}.bias`, [C], 0);
    }
    for (const n of ["self_attn_layer_norm", "final_layer_norm"]) {
      add(`${p}${n}.weight`, [C], 1);
      add(`${p}${n}.bias`, [C], 0);
    }
    add(`${p}fc1.weight`, [32, C]);
    add(`${p}fc1.bias`, [32], 0);
    add(`${p}fc2.weight`, [C, 32]);
    add(`${p}fc2.bias`, [C], 0);
  }
  const config = {
    model_type: "opt",
    hidden_size: C,
    ffn_dim: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 512,
    max_position_embeddings: 64,
    do_layer_norm_before: true,
    word_embed_proj_dim: C,
  };
  saveST(dir, ts);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(llama2cTokenizerJson(readLlama2cTokenizer(TOK, 512))));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>", eos_token: "</s>" }));
}

/** A tiny dense model (src) and its magnitude-50% pruned folder. */
async function densePrunedTiny(family: "llama" | "opt"): Promise<{ src: string; pruned: string }> {
  const src = mkdtempSync(join(tmpdir(), "perp-rt-src-"));
  writeTiny(src, family);
  const m = await loadModel(src);
  const { report, masks } = await prune(m, { method: "magnitude", sparsity: 0.5 });
  const pruned = join(mkdtempSync(join(tmpdir(), "perp-rt-p-")), "pruned");
  savePruned(pruned, m, report, masks);
  return { src, pruned };
}

/** `perp retrain --mode reconstruct` on a pruned tiny LLaMA against its dense source. */
async function reconstructTiny(o: Omit<Parameters<typeof retrainModel>[1], "out">) {
  const { src, pruned } = await densePrunedTiny("llama");
  const out = join(mkdtempSync(join(tmpdir(), "perp-rc-o-")), "out");
  const r = await retrainModel(await loadModel(pruned), { mode: "reconstruct", dense: src, ...o, out });
  return { r, src, pruned, out };
}

async function prunedTiny(family: "llama" | "opt"): Promise<string> {
  return (await densePrunedTiny(family)).pruned;
}

describe.skipIf(!have)("retraining a pruned tiny model", () => {
  const base = { steps: 3, lr: 1e-2, seqlen: 32, batch: 2, dataset: "c4", checkpointEvery: 1 };

  for (const family of ["llama", "opt"] as const)
    for (const [params, loraType] of [
      [["norm", "lora"], "mask_lora"],
      [["bias", "head"], "lora"],
      [["lora"], "lora_prune"],
      [["lora"], "scale_lora"],
      [["full"], "lora"],
    ] as const)
      it(`${family}: ${params.join("+")}${params.includes("lora" as never) ? ` (${loraType})` : ""} keeps exactly the pruned positions at 0`, async () => {
        const dir = await prunedTiny(family);
        const m = await loadModel(dir);
        const out = join(mkdtempSync(join(tmpdir(), "perp-rt-o-")), "out");
        const r = await retrainModel(m, { ...base, params: [...params], loraType, out });
        expect(r.sparsity_after).toBeCloseTo(r.sparsity_before, 12);
        expect(r.masks).toBe("saved");
        const re = await loadModel(out);
        const orig = await loadModel(dir);
        const a = prunableLinears(re.model);
        const b = prunableLinears(orig.model);
        for (let i = 0; i < a.length; i++) {
          const wa = a[i][1].weight.data;
          const wb = b[i][1].weight.data;
          for (let j = 0; j < wa.length; j++) expect(wa[j] === 0).toBe(wb[j] === 0);
        }
        expect(Number.isFinite(r.loss_last10)).toBe(true);
      });

  it("reconstruct mode: per-block MSE against the dense block goes down, sparsity is kept", async () => {
    const { r } = await reconstructTiny({
      params: ["norm", "lora"],
      loraType: "mask_lora",
      loraR: 2,
      steps: 15,
      lr: 1e-2,
      seqlen: 32,
      batch: 2,
      calibSamples: 4,
    });
    expect(r.blocks).toHaveLength(2);
    for (const b of r.blocks ?? []) expect(b.mse_after).toBeLessThan(b.mse_before);
    expect(r.trainable_params).toBe((r.blocks ?? []).reduce((a, b) => a + b.trainable, 0)); // only what blocks hold
    const sum = (k: "mse_before" | "mse_after") => (r.blocks ?? []).reduce((a, b) => a + b[k], 0);
    expect(r.reconstruction_error_initial).toBe(sum("mse_before"));
    expect(r.reconstruction_error_final).toBe(sum("mse_after"));
    expect(r.sparsity_after).toBeCloseTo(0.5, 10);
  });

  it("reconstruct mode, interrupted after block 0, then resumed: the uninterrupted run's model and log", async () => {
    type Opts = Parameters<typeof retrainModel>[1];
    const o = { params: ["norm", "lora"], loraType: "mask_lora", loraR: 2, steps: 4, lr: 1e-2, seqlen: 16 };
    const { r, src, pruned: dir, out } = await reconstructTiny({ ...(o as Omit<Opts, "out">), calibSamples: 3 });
    // what a run killed during block 1 leaves: block 0's checkpoint, and log lines past it (one cut short)
    const cut = join(mkdtempSync(join(tmpdir(), "perp-rc-cut-")), "out");
    const ck = join(cut, "checkpoints", "reconstruct");
    mkdirSync(ck, { recursive: true });
    const from = join(out, "checkpoints", "reconstruct");
    copyFileSync(join(from, "block-0000.safetensors"), join(ck, "block-0000.safetensors"));
    const st = JSON.parse(readFileSync(join(from, "state.json"), "utf8"));
    writeFileSync(
      join(ck, "state.json"),
      JSON.stringify({ ...st, blocks_done: 1, blocks: st.blocks.slice(0, 1), losses: st.losses.slice(0, 4) }),
    );
    const lines = readFileSync(join(out, "log.jsonl"), "utf8").trim().split("\n");
    writeFileSync(join(cut, "log.jsonl"), `${lines.slice(0, 6).join("\n")}\n{"step": 7, "blo`);
    const opts = { mode: "reconstruct", dense: src, ...o, calibSamples: 3, out: cut, resume: true } as Opts;
    await expect(retrainModel(await loadModel(dir), { ...opts, lr: 2e-2 })).rejects.toThrow(
      /refusing to resume .* different recipe:\n {2}lr: checkpoint 0.01 vs now 0.02/,
    );
    const r2 = await retrainModel(await loadModel(dir), opts);
    expect(r2.resumed_from).toBe(4);
    expect(r2.blocks).toEqual(r.blocks);
    expect(r2.loss_last10).toBe(r.loss_last10);
    expect(
      Buffer.compare(readFileSync(join(cut, "model.safetensors")), readFileSync(join(out, "model.safetensors"))),
    ).toBe(0);
    expect(readFileSync(join(cut, "log.jsonl"), "utf8")).toBe(readFileSync(join(out, "log.jsonl"), "utf8"));
  });

  it("reconstruct mode leaves the LM head alone (it is in no block), with a warning, as PERP does", async () => {
    const { r, src, out } = await reconstructTiny({
      params: ["norm", "head"],
      steps: 2,
      lr: 1e-3,
      seqlen: 16,
      calibSamples: 2,
    });
    expect(r.warnings.join(" ")).toMatch(/the LM head is not in a block/);
    const bad = join(mkdtempSync(join(tmpdir(), "perp-rc4-")), "out");
    // refused before anything is written
    type Opts = Parameters<typeof retrainModel>[1];
    const refused = async (o: Partial<Opts>, msg: RegExp) => {
      const opts: Opts = { mode: "reconstruct", dense: src, params: ["norm"], steps: 1, lr: 1e-3, out: bad, ...o };
      await expect(retrainModel(await loadModel(src), opts)).rejects.toThrow(msg);
      expect(existsSync(bad)).toBe(false);
    };
    await refused({ params: ["head"] }, /nothing left to train inside the blocks/);
    await refused({ seqlen: 100000 }, /seqlen 100000 exceeds the model's context/);
    const log = readFileSync(join(out, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(log.map((l) => [l.step, l.block])).toEqual([
      [1, 0],
      [2, 0],
      [3, 1],
      [4, 1],
    ]); // the per-step losses, numbered across blocks (the report's loss chart)
    expect(r.trainable_params).toBe((r.blocks ?? []).reduce((a, b) => a + b.trainable, 0));
    const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    const srcCfg = JSON.parse(readFileSync(join(src, "config.json"), "utf8"));
    expect(cfg.tie_word_embeddings ?? true).toBe(srcCfg.tie_word_embeddings ?? true);
  });

  it("reconstruct mode follows PERP: block i's targets are the dense block i on the pruned model's own stream", async () => {
    const { src, pruned } = await densePrunedTiny("llama");
    const teacher = await loadModel(src);
    const student = await loadModel(pruned);
    // Block 1 back to its dense weights: fed the same inputs, it reproduces its targets exactly (under a separate
    // dense stream its inputs would differ, since block 0 stays pruned).
    const dense1 = teacher.model.blockLinears(1);
    student.model.blockLinears(1).forEach(([, l], j) => {
      l.weight.data = dense1[j][1].weight.data.slice();
    });
    const r = await reconstruct(student, teacher, student.tokenizer as Tokenizer, {
      params: ["norm"],
      steps: 3,
      lr: 1e-3,
      seqlen: 32,
      calibSamples: 4,
      out: mkdtempSync(join(tmpdir(), "perp-rc2-o-")),
    });
    expect(r.blocks[0].mse_before).toBeGreaterThan(0);
    expect(r.blocks[1].mse_before).toBe(0);
  });

  it("training windows from a continuous text (.txt) come from its token stream, whatever its paragraphs' length", async () => {
    const dir = await prunedTiny("llama");
    const m = await loadModel(dir);
    const tok = m.tokenizer as Tokenizer;
    const text = Array.from({ length: 120 }, (_, i) => `Paragraph ${i} is short.`).join("\n\n");
    const ids = tok.encode(text);
    const L = 48;
    expect(Math.max(...text.split("\n\n").map((p) => tok.encode(p).length))).toBeLessThan(L);
    const sampler = new WindowSampler({ kind: "stream", text }, tok, L, 1);
    const w = Array.from({ length: 12 }, () => sampler.next());
    const starts = w.map((x) => {
      const i = ids.findIndex((_, s) => s + L < ids.length && ids.slice(s, s + L).every((v, j) => v === x[j]));
      expect(i).toBeGreaterThanOrEqual(0); // a contiguous slice of the stream, not past its last token
      return i;
    });
    expect(new Set(starts).size).toBeGreaterThan(6);
    sampler.fastForward(5);
    expect(sampler.next()).toEqual(w[5]); // resume redraws the same sequence
    expect(() => new WindowSampler({ kind: "stream", text: "Too short." }, tok, L, 1)).toThrow(
      /fewer than a window needs \(seqlen \+ 1 = 49\)/,
    );
    const f = join(mkdtempSync(join(tmpdir(), "perp-rt-txt-")), "train.txt");
    writeFileSync(f, text);
    const out = join(mkdtempSync(join(tmpdir(), "perp-rt-o-")), "out");
    const r = await retrainModel(m, { ...base, params: ["norm"], loraType: "lora", dataset: f, seqlen: L, out });
    expect(r.steps).toBe(3);
    expect(r.sparsity_after).toBeCloseTo(r.sparsity_before, 12);
  });

  it("plain lora merge densifies and says so", async () => {
    const dir = await prunedTiny("llama");
    const m = await loadModel(dir);
    const out = join(mkdtempSync(join(tmpdir(), "perp-rt-o-")), "out");
    const r = await retrainModel(m, { ...base, params: ["lora"], loraType: "lora", out });
    expect(r.densified).toBe(true);
    expect(r.sparsity_after).toBeLessThan(0.01);
    expect(r.warnings.join()).toMatch(/dense/);
  });

  it("with only norms + LoRA trainable, frozen base weights get no weight-gradient GEMM", async () => {
    const m = await loadModel(await prunedTiny("llama"));
    const params = configureTrainable(m.model, { params: ["norm", "lora"], loraType: "lora", loraR: 2 });
    expect(params.every(([n]) => n.includes("lora_") || n.includes("norm"))).toBe(true);
    const before = gradStats.dWGemms;
    const ids = Int32Array.from({ length: 32 }, (_, i) => (i * 7) % 512);
    const { loss } = F.crossEntropy(
      m.model.forward(ids, 1, 32, { checkpoint: true }),
      Int32Array.from(ids, (_v, i) => (i === 31 ? -100 : ids[i + 1])),
    );
    backward(loss);
    expect(gradStats.dWGemms - before).toBe(2 * 14); // A and B of 14 adapters, nothing else
    for (const [, l] of prunableLinears(m.model)) expect(l.weight.grad).toBeNull();
    mergeAdapters(m.model);
  });

  // Retrains the same pruned tiny model once per setting and checks that losses and merged weights agree bit for bit;
  // `check` sees each run's model and summary.
  async function sameBits(
    tag: string,
    loraType: LoraType,
    settings: Partial<Parameters<typeof retrainModel>[1]>[],
    check: (i: number, m: Awaited<ReturnType<typeof loadModel>>, r: Awaited<ReturnType<typeof retrainModel>>) => void,
  ): Promise<void> {
    const dir = await prunedTiny("llama");
    const runs = [];
    for (const [i, extra] of settings.entries()) {
      const out = join(mkdtempSync(join(tmpdir(), `perp-rt-${tag}-${i}-`)), "out");
      const m = await loadModel(dir);
      const r = await retrainModel(m, { ...base, params: ["norm", "lora"] as Subset[], loraType, out, ...extra });
      check(i, m, r);
      runs.push({ r, w: readFileSync(join(out, "model.safetensors")) });
    }
    expect(runs[1].r.loss_last10).toBe(runs[0].r.loss_last10);
    expect(Buffer.compare(runs[0].w, runs[1].w)).toBe(0);
  }

  it("gradient checkpointing on or off: the same losses and the same merged model, bit for bit", async () => {
    const gcs = ["on", "off"] as const;
    await sameBits(
      "gc",
      "mask_lora",
      gcs.map((gc) => ({ gradientCheckpointing: gc })),
      (i, _m, r) => expect(r.gradient_checkpointing).toBe(gcs[i] === "on"),
    );
  });

  it("frozen weights packed ahead or not: the same losses and the same merged model, bit for bit", async () => {
    let n0 = K.gemmBlocking().packedGemms;
    await sameBits("pf", "lora_prune", [{ packFrozen: "on" }, { packFrozen: "off" }], (i, m) => {
      const used = K.gemmBlocking().packedGemms - n0;
      n0 += used;
      if (isNative && i === 0) expect(used).toBeGreaterThan(0);
      else expect(used).toBe(0);
      for (const [, l] of prunableLinears(m.model)) expect(l.weight.packed).toBeNull(); // released before the merge
    });
  });

  it("bad input: steps 0, lr <= 0, rank too large, unpruned model warns, resume with another recipe is refused", async () => {
    const dir = await prunedTiny("llama");
    const out = join(mkdtempSync(join(tmpdir(), "perp-rt-o-")), "out");
    await expect(retrainModel(await loadModel(dir), { ...base, steps: 0, params: ["norm"], out })).rejects.toThrow(
      /steps must be a positive integer/,
    );
    await expect(retrainModel(await loadModel(dir), { ...base, lr: 0, params: ["norm"], out })).rejects.toThrow(
      /lr must be > 0/,
    );
    await expect(retrainModel(await loadModel(dir), { ...base, params: ["lora"], loraR: 99, out })).rejects.toThrow(
      /LoRA rank 99 must be an integer in \[1, 16\]/,
    );
    await retrainModel(await loadModel(dir), { ...base, params: ["norm"], out });
    await expect(
      retrainModel(await loadModel(dir), { ...base, lr: 0.5, params: ["norm"], out, resume: true }),
    ).rejects.toThrow(/refusing to resume .* different recipe:\n {2}lr: checkpoint 0.01 vs now 0.5/);
    const src = mkdtempSync(join(tmpdir(), "perp-rt-dense-"));
    writeTiny(src, "llama");
    const r = await retrainModel(await loadModel(src), { ...base, steps: 1, params: ["norm"], out: join(src, "o") });
    expect(r.warnings.join()).toMatch(/was not pruned .* nothing to keep sparse/);
  });

  it("kill -9 during retraining, then --resume: the same final loss and model as an uninterrupted run", async () => {
    const dir = await prunedTiny("llama");
    const args = (out: string) => [
      "--import",
      "tsx",
      "src/cli/run.ts",
      "retrain",
      "--model",
      dir,
      "--params",
      "norm,lora",
      "--lora-type",
      "mask_lora",
      "--lora-r",
      "2",
      "--steps",
      "12",
      "--lr",
      "1e-2",
      "--seqlen",
      "32",
      "--batch",
      "2",
      "--checkpoint-every",
      "3",
      "--out",
      out,
      "--json",
    ];
    const env = { ...process.env, PERP_QUIET: "1" };
    const full = join(mkdtempSync(join(tmpdir(), "perp-k-")), "a");
    const ref = JSON.parse(execFileSync(process.execPath, args(full), { encoding: "utf8", env }));
    const cut = join(mkdtempSync(join(tmpdir(), "perp-k-")), "b");
    const child = spawn(process.execPath, args(cut), { env, stdio: "ignore" });
    let done = false;
    const exited = new Promise((r) =>
      child.on("exit", (c) => {
        done = true;
        r(c);
      }),
    );
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        const log = join(cut, "log.jsonl");
        if (done || (existsSync(log) && readFileSync(log, "utf8").split("\n").filter(Boolean).length >= 4)) {
          clearInterval(poll);
          child.kill("SIGKILL");
          resolve();
        }
      }, 20);
    });
    await exited;
    const res = JSON.parse(execFileSync(process.execPath, [...args(cut), "--resume"], { encoding: "utf8", env }));
    expect(res.loss_last10).toBe(ref.loss_last10);
    expect(res.loss_first10).toBe(ref.loss_first10);
    const wa = readFileSync(join(full, "model.safetensors"));
    const wb = readFileSync(join(cut, "model.safetensors"));
    expect(Buffer.compare(wa, wb)).toBe(0);
    // the loss log: every step once, with the uninterrupted run's losses (steps the killed run got past its last
    // checkpoint are not repeated)
    const steps = (d: string) =>
      readFileSync(join(d, "log.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { step: number; loss: number })
        .map(({ step, loss }) => [step, loss]);
    expect(steps(cut)).toEqual(steps(full));
  });
});

describe("the bias subset on Mistral (transformers' Mistral has no biases)", () => {
  const cfg = (window: number | null) => ({
    ...MICRO_LLAMA,
    model_type: "mistral",
    sliding_window: window,
    attention_bias: true, // ignored for Mistral, as transformers does
  });
  it("without a binding window the model is exported as LLaMA with attention_bias / mlp_bias", () => {
    const m = buildModel(cfg(null));
    expect(m.namedParameters().some(([n]) => n.endsWith(".bias"))).toBe(false);
    const ps = configureTrainable(m, { params: ["bias"] });
    expect(ps.length).toBe(7);
    const c = m.config as Record<string, unknown>;
    expect([c.model_type, c.attention_bias, c.mlp_bias, c.sliding_window]).toEqual(["llama", true, true, undefined]);
    expect(buildModel(cfg(16)).config.model_type).toBe("mistral");
    configureTrainable(buildModel(cfg(16)), { params: ["bias"] }); // window = context: never binds
  });
  it("with a window shorter than the context: a clear error", () => {
    expect(() => configureTrainable(buildModel(cfg(4)), { params: ["norm", "bias"] })).toThrow(
      /'bias' subset cannot be used on this Mistral model.*sliding window of 4 tokens/,
    );
  });
});

describe("the bias subset on Qwen2 (biases on q, k, v only), Qwen3 (no MLP biases, q_norm / k_norm), Phi-3 and Gemma", () => {
  const qwen2 = (window: number | null, layers = 2) => ({
    ...MICRO_LLAMA,
    model_type: "qwen2",
    num_hidden_layers: layers,
    use_sliding_window: window !== null,
    sliding_window: window,
    max_window_layers: 1,
  });
  it("Qwen2 without a binding window: exported as LLaMA with every bias; its own q, k, v biases kept", () => {
    const m = buildModel(qwen2(null));
    const before = m.namedParameters().filter(([n]) => n.endsWith(".bias"));
    expect(before.map(([n]) => n.replace(/^model\.layers\.0\./, "")).slice(0, 3)).toEqual([
      "self_attn.q_proj.bias",
      "self_attn.k_proj.bias",
      "self_attn.v_proj.bias",
    ]);
    expect(before.length).toBe(6);
    const kept = before.map(([, t]) => t);
    const ps = configureTrainable(m, { params: ["bias"] });
    expect(ps.length).toBe(14);
    for (const t of kept) expect(ps.some(([, p]) => p === t)).toBe(true);
    const c = m.config as Record<string, unknown>;
    expect([c.model_type, c.attention_bias, c.mlp_bias, c.use_sliding_window, c.layer_types]).toEqual([
      "llama",
      true,
      true,
      undefined,
      undefined,
    ]);
    // the window applies from block max_window_layers on: one block only, before it, never binds
    configureTrainable(buildModel(qwen2(4, 1)), { params: ["bias"] });
  });
  it("Qwen2 with a binding window, and any Qwen3: a clear error", () => {
    expect(() => configureTrainable(buildModel(qwen2(4)), { params: ["bias"] })).toThrow(
      /'bias' subset cannot be used on this Qwen2 model.*sliding window of 4 tokens/,
    );
    const q3 = buildModel({ ...MICRO_LLAMA, model_type: "qwen3", head_dim: 4 });
    expect(() => configureTrainable(q3, { params: ["norm", "bias"] })).toThrow(
      /'bias' subset cannot be used on a Qwen3/,
    );
    const phi3 = buildModel({ ...MICRO_LLAMA, model_type: "phi3" });
    expect(() => configureTrainable(phi3, { params: ["bias", "lora"] })).toThrow(
      /'bias' subset cannot be used on a Phi-3 model/,
    );
    for (const model_type of ["gemma", "gemma3_text"])
      expect(() => configureTrainable(buildModel({ ...MICRO_LLAMA, model_type }), { params: ["bias"] })).toThrow(
        /'bias' subset cannot be used on a Gemma model/,
      );
    // its fused projections are one adapter each, as transformers' modules are
    const adapted = configureTrainable(phi3, { params: ["lora"], loraR: 2 }).map(([n]) => n);
    expect(adapted.filter((n) => n.endsWith("lora_A")).map((n) => n.split(".").slice(3, 5).join("."))).toEqual([
      "self_attn.qkv_proj",
      "self_attn.o_proj",
      "mlp.gate_up_proj",
      "mlp.down_proj",
    ]);
    // its per-head q_norm / k_norm are in the norm subset
    const names = configureTrainable(q3, { params: ["norm"] }).map(([n]) => n);
    expect(names).toContain("model.layers.0.self_attn.q_norm.weight");
    expect(names).toContain("model.layers.0.self_attn.k_norm.weight");
  });
});
