// PERP's trainable subsets (combinable): bias (the biases of every pruned linear, created as zeros where the family
// has none; LLaMA then exports attention_bias/mlp_bias = true so transformers creates and loads them, Mistral and
// Qwen2 are exported as LLaMA and Qwen3, Phi-3 and Gemma are refused (see checkBiasExportable), OPT sets enable_bias, NeoX
// attention_bias), norm
// (every LayerNorm/RMSNorm weight and bias), head (the LM head; a tied head is untied: a copy of the embedding and
// tie_word_embeddings = false), lora (an adapter of `loraType` on every pruned linear), full (every parameter; masks
// are re-applied after each optimizer step).

import { type LlamaConfig, windowBinds } from "../models/llama.js";
import type { CausalLM } from "../models/registry.js";
import { LayerNorm, type Linear, LORA_TYPES, type LoraType, RMSNorm } from "../nn/layers.js";
import { Rng } from "../tensor/rng.js";
import type { Tensor } from "../tensor/tensor.js";

export type Subset = "bias" | "norm" | "head" | "lora" | "full";
export const SUBSETS: Subset[] = ["bias", "norm", "head", "lora", "full"];

export interface PeftOptions {
  params: Subset[];
  loraType?: LoraType;
  loraR?: number;
  loraAlpha?: number;
  seed?: number;
}

export class PeftError extends Error {}

export function parseSubsets(s: string | string[]): Subset[] {
  const list = Array.isArray(s)
    ? s
    : s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean);
  if (!list.length) throw new PeftError(`no trainable subset given (valid: ${SUBSETS.join(", ")})`);
  for (const x of list)
    if (!SUBSETS.includes(x as Subset)) throw new PeftError(`unknown subset '${x}' (valid: ${SUBSETS.join(", ")})`);
  return list as Subset[];
}

export function checkLoraType(t: string): LoraType {
  if (!LORA_TYPES.includes(t as LoraType))
    throw new PeftError(`unknown LoRA type '${t}' (valid: ${LORA_TYPES.join(", ")})`);
  return t as LoraType;
}

export function prunableLinears(model: CausalLM): [string, Linear][] {
  const out: [string, Linear][] = [];
  for (let i = 0; i < model.numBlocks; i++) out.push(...model.blockLinears(i));
  return out;
}

/** Freezes everything, then enables the chosen subsets; returns the trainable parameters with stable names. */
export function configureTrainable(model: CausalLM, o: PeftOptions): [string, Tensor][] {
  const subs = new Set(o.params);
  if (subs.has("bias")) checkBiasExportable(model.config as Record<string, unknown>);
  model.requiresGrad(false);
  const lins = prunableLinears(model);
  if (subs.has("lora")) {
    const type = checkLoraType(o.loraType ?? "lora");
    const r = o.loraR ?? 16;
    const alpha = o.loraAlpha ?? 32;
    const rng = new Rng(o.seed ?? 0);
    for (const [name, l] of lins) {
      try {
        const ad = l.lora ?? l.addLora(r, alpha, rng, type);
        ad.A.requiresGrad = true;
        ad.B.requiresGrad = true;
      } catch (e) {
        throw new PeftError(`${name}: ${(e as Error).message}`);
      }
    }
  }
  if (subs.has("bias")) {
    for (const [, l] of lins) l.ensureBias().requiresGrad = true;
    const c = model.config as Record<string, unknown>;
    if (c.model_type === "mistral" || c.model_type === "qwen2") {
      // transformers' Mistral has no bias parameters and Qwen2's only on q, k and v; without a window that binds
      // either is LLaMA, which has them on every linear.
      c.model_type = "llama";
      c.architectures = ["LlamaForCausalLM"];
      for (const k of ["sliding_window", "use_sliding_window", "max_window_layers", "layer_types"]) delete c[k];
    }
    if (c.model_type === "llama") {
      c.attention_bias = true;
      c.mlp_bias = true;
    }
    if (c.model_type === "opt") c.enable_bias = true;
    if (c.model_type === "gpt_neox") c.attention_bias = true;
  }
  if (subs.has("head")) model.untieHead().weight.requiresGrad = true;
  if (subs.has("norm"))
    for (const [, m] of model.namedModules())
      if (m instanceof LayerNorm || m instanceof RMSNorm) for (const p of m.parameters()) p.requiresGrad = true;
  if (subs.has("full")) for (const p of model.parameters()) p.requiresGrad = true;
  return model.namedParameters().filter(([, p]) => p.requiresGrad);
}

/**
 * The `bias` subset creates biases where the family has none, and the exported config must make transformers create
 * them too. Its Mistral class has no biases at all and its Qwen2 class none on o_proj or the MLP: such a model is
 * exported as LLaMA instead (the same network when no sliding window binds), and refused when a window is shorter than
 * its context. Qwen3 has no MLP biases, and LLaMA no q_norm / k_norm; Phi-3 has no biases at all, and LLaMA no
 * fused qkv_proj / gate_up_proj; Gemma has no MLP biases, and LLaMA no (1 + weight) norms: all three refused.
 */
export function checkBiasExportable(c: Record<string, unknown>): void {
  const t = c.model_type;
  if (t === "qwen3")
    throw new PeftError(
      "the 'bias' subset cannot be used on a Qwen3 model: transformers' Qwen3 has no MLP biases, and its q_norm / k_norm keep it from being exported as LLaMA; choose subsets without 'bias' (e.g. norm,lora)",
    );
  if (t === "phi3")
    throw new PeftError(
      "the 'bias' subset cannot be used on a Phi-3 model: transformers' Phi-3 has no bias parameters, and its fused qkv_proj / gate_up_proj keep it from being exported as LLaMA; choose subsets without 'bias' (e.g. norm,lora)",
    );
  if (t === "gemma" || t === "gemma3_text")
    throw new PeftError(
      "the 'bias' subset cannot be used on a Gemma model: transformers' Gemma has no MLP biases, and its (1 + weight) norms and scaled embeddings keep it from being exported as LLaMA; choose subsets without 'bias' (e.g. norm,lora)",
    );
  if (t !== "mistral" && t !== "qwen2") return;
  const cfg = c as unknown as LlamaConfig;
  if (windowBinds(cfg)) {
    const name = t === "mistral" ? "Mistral" : "Qwen2";
    const what = t === "mistral" ? "has no bias parameters" : "has biases only on q_proj, k_proj and v_proj";
    throw new PeftError(
      `the 'bias' subset cannot be used on this ${name} model: transformers' ${name} ${what}, and with a sliding window of ${cfg.sliding_window} tokens (context ${cfg.max_position_embeddings ?? "unknown"}) it cannot be exported as LLaMA either; choose subsets without 'bias' (e.g. norm,lora)`,
    );
  }
}

export function countParams(ps: [string, Tensor][]): number {
  return ps.reduce((a, [, p]) => a + p.size, 0);
}

/** Merges every adapter into plain weights (see Linear.mergeLora). */
export function mergeAdapters(model: CausalLM): { merged: number; densified: boolean } {
  let merged = 0;
  let densified = false;
  for (const [, l] of prunableLinears(model)) {
    if (!l.lora) continue;
    if (l.lora.type === "lora" && l.mask) densified = true;
    l.mergeLora();
    merged++;
  }
  return { merged, densified };
}

/** configureTrainable + the counts every stage reports (trainable, and the model's own parameters without adapters). */
export function setupTrainable(
  model: CausalLM,
  o: { params: Subset[]; loraType?: LoraType; loraR?: number; loraAlpha?: number; seed?: number },
): { params: [string, Tensor][]; nTrain: number; nModel: number } {
  const params = configureTrainable(model, {
    params: o.params,
    loraType: o.loraType,
    loraR: o.loraR,
    loraAlpha: o.loraAlpha,
    seed: o.seed,
  });
  const nModel = model
    .namedParameters()
    .filter(([n]) => !n.includes("lora_"))
    .reduce((a, [, p]) => a + p.size, 0);
  return { params, nTrain: countParams(params), nModel };
}
