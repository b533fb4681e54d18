// Engine benchmark on the DESIGN.md "llama768" config (random weights, seed 0, batch 1x512): sgemm 4096³ vs a
// measured FMA peak, forward, forward+backward (full and PEFT: norms + LoRA r=16). A benchmark, never a test.
import { cpus } from "node:os";
import { LlamaForCausalLM } from "../models/llama.js";
import * as F from "../nn/functional.js";
import { packFrozenWeights } from "../nn/packed.js";
import { backward, clearTape, noGrad } from "../nn/tape.js";
import { getMethod } from "../prune/methods.js";
import { pruneSequential } from "../prune/sequential.js";
import { Arena, newF32, withArena } from "../tensor/arena.js";
import { isNative, K } from "../tensor/native.js";
import { Rng } from "../tensor/rng.js";

export const LLAMA768 = {
  model_type: "llama",
  hidden_size: 768,
  intermediate_size: 2048,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_key_value_heads: 4,
  vocab_size: 32000,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
};

function now(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * One square sgemm C = A·B (n x n) timed right after an FMA-peak reading: its rate (GFLOP/s) and share of that peak.
 * A shared VM's speed drifts by 10-20% within a minute, which a single peak reading would fold into the share.
 */
export function sgemmVsPeak(
  C: Float32Array,
  A: Float32Array,
  B: Float32Array,
  n: number,
): { rate: number; share: number } {
  const peak = K.peakGflops(0.1);
  const t = now();
  K.gemm(C, A, B, n, n, n, false, false, 1, 0);
  const rate = (2 * n ** 3) / (now() - t) / 1e9;
  return { rate, share: rate / peak };
}

/** Median seconds of each function, run in turn (f0, f1, f0, f1, ...) so slow phases of the machine hit all alike. */
function timeAlternating(fns: (() => void)[], warmup: number, reps: number): number[] {
  for (let i = 0; i < warmup; i++) for (const f of fns) f();
  const ts = fns.map(() => [] as number[]);
  for (let i = 0; i < reps; i++) {
    fns.forEach((f, j) => {
      const t = now();
      f();
      ts[j].push(now() - t);
    });
  }
  return ts.map(median);
}

function time(fn: () => void, warmup: number, reps: number): number {
  return timeAlternating([fn], warmup, reps)[0];
}

export interface EngineBenchResult {
  [key: string]: string | number | boolean;
}

/**
 * Model FLOPs per token of one fwd+bwd step as the engine computes it, everything trainable (`full`) and with only
 * norms + rank-r LoRA on the given block linears trainable (`peft`): products 2 FLOPs per multiply-add; causal
 * attention over the lower triangle of the scores (QKᵀ and PV forward, twice that backward: 6·T·C per token and
 * layer); full = 6·N (forward, dX, dW) with N the matmul parameters (head included); PEFT = 4·N (no dW) plus the
 * rank-r products of each adapter (x·Aᵀ, its fold into y, g·B, dB, dA and the fold into dX: 6·r·(in + out)).
 * full ÷ peft is what PEFT ÷ full would be if both steps ran at the same FLOP rate.
 */
export function stepFlopsPerToken(
  matmulParams: number,
  layers: number,
  hidden: number,
  T: number,
  r: number,
  adapted: { inFeatures: number; outFeatures: number }[],
): { full: number; peft: number } {
  const attention = 6 * T * hidden * layers;
  const lora = adapted.reduce((a, l) => a + 6 * r * (l.inFeatures + l.outFeatures), 0);
  return { full: 6 * matmulParams + attention, peft: 4 * matmulParams + lora + attention };
}

/** Seconds to prune one llama768 block with calibration (stats forward + prune 7 linears + re-forward). */
export function pruneBlockSeconds(method: "wanda" | "sparsegpt", samples: number, seqlen: number): number {
  const model = new LlamaForCausalLM({ ...LLAMA768, num_hidden_layers: 1 }).initRandom(0, 0.02);
  const rng = new Rng(1);
  const ids = Int32Array.from({ length: samples * seqlen }, () => rng.int(LLAMA768.vocab_size));
  const t = now();
  pruneSequential(model, {
    method: getMethod(method),
    spec: { sparsity: 0.5, nm: null, scope: method === "wanda" ? "row" : "matrix" },
    seed: 0,
    calibration: { ids, samples, seqlen, docIndices: [] },
  });
  return now() - t;
}

export function runEngineBench(
  opts: { quick?: boolean; prune?: boolean; log?: (msg: string) => void } = {},
): EngineBenchResult {
  const quick = !!opts.quick;
  const log = opts.log ?? (() => {});

  const threads = K.threads();
  const cpu = K.cpu();
  const blocking = K.gemmBlocking();
  let peak = 0;
  for (let i = 0; i < 5; i++) peak = Math.max(peak, K.peakGflops(0.2));
  log(`cpu path ${cpu.active}, ${threads} threads, FMA peak ${peak.toFixed(1)} GFLOP/s`);

  // sgemm 4096³
  const n = quick ? 1024 : 4096;
  const rng = new Rng(0);
  // Allocated as the engine allocates its own large tensors (newF32: on 2 MiB pages where the OS allows).
  const A = rng.fillNormal(newF32(n * n)) as Float32Array;
  const Bm = rng.fillNormal(newF32(n * n)) as Float32Array;
  const Cm = newF32(n * n);
  // The share of peak is the median of the products' shares, each against the peak read just before it.
  K.gemm(Cm, A, Bm, n, n, n, false, false, 1, 0);
  const rates: number[] = [];
  const shares: number[] = [];
  for (let r = 0; r < (quick ? 3 : 7); r++) {
    const { rate, share } = sgemmVsPeak(Cm, A, Bm, n);
    rates.push(rate);
    shares.push(share);
  }
  const sgemm = median(rates);
  const sgemmShare = median(shares);
  log(`sgemm ${n}³: ${sgemm.toFixed(1)} GFLOP/s (${(100 * sgemmShare).toFixed(1)}% of the peak read next to it)`);

  const cfg = quick ? { ...LLAMA768, num_hidden_layers: 2 } : LLAMA768;
  const T = 512;
  const model = new LlamaForCausalLM(cfg).initRandom(0, 0.02);
  const ids = Int32Array.from({ length: T }, () => rng.int(cfg.vocab_size));
  const targets = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
  const C = cfg.hidden_size;
  const perLayer = C * C * 2 + 2 * C * (C / 3) + 3 * C * cfg.intermediate_size; // q,o + k,v (4 of 12 heads) + gate,up,down
  const matmulParams = cfg.num_hidden_layers * perLayer + C * cfg.vocab_size;
  // Model FLOPs per token for forward+backward: 6·N_matmul + attention 12·L·C·T (PaLM appendix B convention).
  const flopsPerToken = 6 * matmulParams + 12 * cfg.num_hidden_layers * C * T;
  const reps = quick ? 2 : 7;
  const arena0 = new Arena();
  const warm = quick ? 1 : 2;

  const tf = time(() => withArena(arena0, () => noGrad(() => model.forward(ids, 1, T))), warm, reps);
  const fwdTok = T / tf;
  log(`forward: ${fwdTok.toFixed(0)} tok/s`);

  // Full vs PEFT on two instances with the same weights, timed alternately (full, PEFT, full, ...): a shared VM
  // drifts by 10-30% over a minute, and interleaving puts both through the same conditions, so their ratio is
  // meaningful even when the absolute numbers move.
  // Each instance steps inside its own arena, as the training loop does: activation and gradient buffers are reused
  // from step to step instead of being allocated (and zero-filled) anew.
  const stepOf = (m: LlamaForCausalLM) => {
    const arena = new Arena();
    return () => {
      withArena(arena, () => backward(F.crossEntropy(m.forward(ids, 1, T), targets).loss));
      m.zeroGrad();
      clearTape();
    };
  };
  model.requiresGrad(true);
  // PEFT: only RMSNorm weights + LoRA r=16 (α 32) on every block linear are trainable.
  const peftModel = new LlamaForCausalLM(cfg).initRandom(0, 0.02);
  peftModel.requiresGrad(false);
  const lrng = new Rng(1);
  let trainable = 0;
  for (const layer of peftModel.model.layers.items) {
    for (const [, lin] of layer.linears()) {
      const l = lin.addLora(16, 32, lrng);
      lrng.fillNormal(l.B.data, 1e-3); // non-zero so the timed backward is representative (as torch_bench.py)
      trainable += l.A.size + l.B.size;
    }
    layer.input_layernorm.weight.requiresGrad = true;
    layer.post_attention_layernorm.weight.requiresGrad = true;
    trainable += 2 * C;
  }
  peftModel.model.norm.weight.requiresGrad = true;
  trainable += C;
  const stepFlops = stepFlopsPerToken(
    matmulParams,
    cfg.num_hidden_layers,
    C,
    T,
    16,
    peftModel.model.layers.items.flatMap((layer) => layer.linears().map(([, l]) => l)),
  );
  // Frozen weights packed once for the GEMM, as the retraining loop does (--pack-frozen auto).
  const packed = packFrozenWeights(peftModel, "auto");
  // 11 rounds: on a VM whose speed swings by a third within minutes, 7 left the ratio of the medians scattered over
  // 1.33-1.46 between runs where single profiled steps gave 1.41 (session 21).
  const [tfull, tpeft] = timeAlternating([stepOf(model), stepOf(peftModel)], warm, quick ? reps : 11);
  const fullTok = T / tfull;
  const peftTok = T / tpeft;
  log(`fwd+bwd full: ${fullTok.toFixed(0)} tok/s`);
  log(`fwd+bwd PEFT (norms + LoRA r=16, ${trainable} trainable): ${peftTok.toFixed(0)} tok/s`);

  const prunes: Record<string, number> = {};
  if (opts.prune !== false) {
    const [ns, sl] = quick ? [8, 128] : [128, 512];
    for (const m of ["wanda", "sparsegpt"] as const) {
      prunes[`${m}_block_s`] = +pruneBlockSeconds(m, ns, sl).toFixed(2);
      log(`${m}: one llama768 block at ${ns}x${sl} calibration tokens in ${prunes[`${m}_block_s`]} s`);
    }
  }
  const result = {
    bench: "perp",
    native: isNative,
    cpu: cpu.active,
    // the processor as the OS names it, and the CPUs this process may use: runs on different machines stay apart
    cpu_model: cpus()[0]?.model.trim() ?? "unknown",
    usable_cpus: K.usableCpus(),
    threads,
    peak_gflops: +peak.toFixed(1),
    sgemm_gflops_4096: +sgemm.toFixed(1),
    sgemm_pct_peak: +(100 * sgemmShare).toFixed(1),
    // GEMM cache blocking in force (K block, row block in MR panels, B panels per group; PERP_KC / PERP_MCP / PERP_JG)
    gemm_blocking: isNative ? `${blocking.kc}/${blocking.mcp}/${blocking.jg}` : "none",
    fwd_tok_s: +fwdTok.toFixed(1),
    fwdbwd_full_tok_s: +fullTok.toFixed(1),
    fwdbwd_peft_tok_s: +peftTok.toFixed(1),
    peft_over_full: +(peftTok / fullTok).toFixed(3),
    // PEFT ÷ full if both steps ran at the same FLOP rate (stepFlopsPerToken), and the PEFT step's FLOP rate as a
    // share of the full step's: the measured ratio is their product
    peft_over_full_flop_ceiling: +(stepFlops.full / stepFlops.peft).toFixed(3),
    peft_flop_rate_over_full: +((peftTok * stepFlops.peft) / (fullTok * stepFlops.full)).toFixed(3),
    fwdbwd_full_mfu: +((fullTok * flopsPerToken) / (peak * 1e9)).toFixed(3),
    peft_trainable_params: trainable,
    peft_packed_frozen_mb: packed.weights ? Math.round(packed.bytes / 2 ** 20) : 0,
    ...prunes,
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    config: quick ? "llama768 (2 layers, --quick)" : "llama768",
  };
  return result;
}
