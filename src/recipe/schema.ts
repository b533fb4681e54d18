// Recipes: YAML validated by one zod schema with documented defaults; knob names follow the PERP code
// (goal_sparsity, sparsity_type, prune_method, training_mode, peft_use_*, lora_type, lora_r, lora_alpha, n_iterations,
// initial_lr, gradient_accumulation_steps), grouped by stage. Unknown keys are errors that suggest the nearest name.
import { z } from "zod";
import { nearest } from "../cli/args.js";

const Model = z
  .object({
    /** HF id or folder. */
    id: z.string().optional().describe("HF model id (cache/Hub) or local folder"),
    /** llama2.c import instead of an HF model. */
    llama2c: z
      .object({ model: z.string(), tokenizer: z.string() })
      .strict()
      .optional()
      .describe("llama2.c checkpoint + tokenizer to import"),
    revision: z.string().default("main").describe("Hub revision"),
  })
  .strict()
  .refine((m) => !!m.id !== !!m.llama2c, { message: "give exactly one of model.id and model.llama2c" });

const Prune = z
  .object({
    prune_method: z.enum(["magnitude", "random", "wanda", "sparsegpt"]).default("magnitude").describe("pruning method"),
    goal_sparsity: z
      .number()
      .min(0)
      .lt(1)
      .default(0.5)
      .describe("fraction of zeros in every prunable linear (unstructured)"),
    sparsity_type: z.enum(["unstructured", "2:4", "4:8"]).default("unstructured").describe("unstructured or N:M"),
    scope: z.enum(["matrix", "row"]).optional().describe("comparison group (default: the method's)"),
    calib_samples: z.number().int().positive().default(128).describe("calibration windows (wanda, sparsegpt)"),
    calib_seqlen: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("calibration window length (default: context, ≤ 2048)"),
    calib_dataset: z.string().default("c4").describe("c4 | wikitext2 | tinystories | file"),
    seed: z.number().int().default(0).describe("calibration sampling / random pruning seed"),
    reconstruct_n_samples: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("PERP's name for calib_samples (its C4 samples for wanda, sparsegpt and reconstruct)"),
  })
  .strict();

const Retrain = z
  .object({
    training_mode: z
      .enum(["retrain", "reconstruct", "none"])
      .default("retrain")
      .describe("retrain (next-token), reconstruct (per-block MSE) or none"),
    peft_use_bias: z.boolean().default(false).describe("train the biases of the pruned linears"),
    peft_use_ln: z.boolean().default(true).describe("train LayerNorm/RMSNorm weights and biases"),
    peft_use_lm_head: z.boolean().default(false).describe("train the LM head (untied if tied)"),
    peft_use_lora: z.boolean().default(true).describe("LoRA adapters on every pruned linear"),
    full_ft: z.boolean().default(false).describe("full retraining (every weight; masks re-applied)"),
    peft_strategy: z
      .enum(["SelectivePEFT", "FullFT"])
      .optional()
      .describe("PERP's switch: FullFT = full_ft, SelectivePEFT = the peft_use_* subsets"),
    lora_dropout: z.number().min(0).lt(1).default(0).describe("LoRA dropout: only 0 (PERP's LoRA variants use none)"),
    lora_type: z.enum(["lora", "lora_prune", "mask_lora", "scale_lora"]).default("mask_lora").describe("LoRA variant"),
    lora_r: z.number().int().positive().default(16).describe("LoRA rank"),
    lora_alpha: z.number().positive().default(32).describe("LoRA alpha (scale alpha / r)"),
    n_iterations: z.number().int().positive().default(100).describe("optimizer steps (per block in reconstruct)"),
    initial_lr: z.number().positive().default(5e-4).describe("peak learning rate"),
    batch_size: z.number().int().positive().default(1).describe("windows per micro-batch"),
    gradient_accumulation_steps: z.number().int().positive().default(1).describe("micro-batches per step"),
    warmup: z.number().min(0).max(1).default(0.1).describe("warmup fraction"),
    weight_decay: z.number().min(0).default(0).describe("AdamW weight decay"),
    optim: z.enum(["adamw_torch", "adamw"]).default("adamw_torch").describe("optimizer: AdamW (the only one)"),
    lr_scheduler_type: z.enum(["linear"]).default("linear").describe("linear decay after warmup (the only one)"),
    max_grad_norm: z
      .number()
      .min(0)
      .default(0)
      .describe("gradient-norm clipping, 0 = off (PERP's code trains with transformers' Trainer, which clips at 1.0)"),
    seqlen: z.number().int().positive().optional().describe("window length (default: context, ≤ 2048)"),
    dataset: z.string().default("c4").describe("training data"),
    seed: z.number().int().default(0).describe("data and LoRA init seed"),
    checkpoint_every: z.number().int().positive().optional().describe("checkpoint every K steps"),
    grad_checkpoint: z
      .enum(["auto", "on", "off"])
      .default("auto")
      .describe("per-block gradient checkpointing (auto: on when activations would need > 1/4 of memory)"),
    gradient_checkpointing: z
      .boolean()
      .optional()
      .describe("PERP's name: true = grad_checkpoint on, false = off (never changes the numbers)"),
    pack_frozen: z
      .enum(["auto", "on", "off"])
      .default("auto")
      .describe("pack frozen linear weights once for the GEMM (auto: when two f32 copies fit in 1/4 of memory)"),
  })
  .strict();

const Eval = z
  .object({
    ppl: z.array(z.string()).default(["wikitext2"]).describe("perplexity datasets"),
    seqlen: z.number().int().positive().optional().describe("perplexity window (default: context, ≤ 4096)"),
    max_tokens: z.number().int().positive().optional().describe("evaluate only the first N tokens"),
    tasks: z.array(z.string()).default([]).describe("zero-shot tasks"),
    limit: z.number().int().positive().optional().describe("documents per task"),
    stages: z
      .array(z.enum(["dense", "pruned", "retrained"]))
      .default(["dense", "pruned", "retrained"])
      .describe("which models to evaluate"),
  })
  .strict();

const Export = z
  .object({
    dense: z.boolean().default(true).describe("HF folder with exact zeros"),
    compressed: z.boolean().default(true).describe("compressed-tensors sparse safetensors"),
  })
  .strict();

export const RecipeSchema = z
  .object({
    name: z.string().default("run").describe("run name"),
    model: Model,
    prune: Prune.default({}),
    retrain: Retrain.default({}),
    eval: Eval.default({}),
    export: Export.default({}),
  })
  .strict()
  .superRefine((r, ctx) => {
    const t = r.retrain;
    const issue = (path: string[], message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path, message });
    const p = r.prune;
    if (p.reconstruct_n_samples !== undefined && p.calib_samples !== 128 && p.calib_samples !== p.reconstruct_n_samples)
      issue(["prune", "reconstruct_n_samples"], "give one of calib_samples and reconstruct_n_samples (the same knob)");
    if (t.peft_strategy === "SelectivePEFT" && t.full_ft)
      issue(["retrain", "peft_strategy"], "peft_strategy: SelectivePEFT contradicts full_ft: true");
    if (t.lora_dropout > 0)
      issue(
        ["retrain", "lora_dropout"],
        "LoRA dropout is not supported: perp's LoRA variants train without it (PERP's code sets it to 0 for its own)",
      );
    if (
      t.gradient_checkpointing !== undefined &&
      t.grad_checkpoint !== "auto" &&
      (t.grad_checkpoint === "on") !== t.gradient_checkpointing
    )
      issue(["retrain", "gradient_checkpointing"], `contradicts grad_checkpoint: ${t.grad_checkpoint}`);
    const full = t.full_ft || t.peft_strategy === "FullFT";
    if (
      t.training_mode !== "none" &&
      !full &&
      !(t.peft_use_bias || t.peft_use_ln || t.peft_use_lm_head || t.peft_use_lora)
    )
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["retrain"],
        message: "nothing to train: enable a peft_use_* subset or full_ft (or training_mode: none)",
      });
    if (full && t.training_mode === "reconstruct")
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["retrain", "full_ft"],
        message: "full_ft is not supported with training_mode: reconstruct",
      });
  });

export type Recipe = z.infer<typeof RecipeSchema>;

/** Keys whose values are lists by type (every other list value is a sweep). */
export const LIST_KEYS = new Set(["eval.ppl", "eval.tasks", "eval.stages"]);

export class RecipeError extends Error {}

function knownKeys(path: (string | number)[]): string[] {
  const shapes: Record<string, string[]> = {
    "": Object.keys(RecipeSchema._def.schema.shape),
    model: ["id", "llama2c", "revision"],
    prune: Object.keys(Prune.shape),
    retrain: Object.keys(Retrain.shape),
    eval: Object.keys(Eval.shape),
    export: Object.keys(Export.shape),
  };
  return shapes[path.join(".")] ?? [];
}

/** One message per problem, with the nearest valid key for typos. */
export function formatIssues(err: z.ZodError, where: string): string {
  const lines = err.issues.map((i) => {
    const at = i.path.join(".") || "(root)";
    if (i.code === "unrecognized_keys") {
      return i.keys
        .map((k) => {
          const best = nearest(k, knownKeys(i.path));
          const p = i.path.length ? `${i.path.join(".")}.${k}` : k;
          return `${p}: unknown key${best ? ` (did you mean '${best}'?)` : ""}`;
        })
        .join("\n");
    }
    return `${at}: ${i.message}`;
  });
  return `${where}: invalid recipe\n  ${lines.join("\n  ")}`;
}

/** PERP's alternative knob names resolved into perp's own, once, so the rest of the code reads one field each. */
function resolveAliases(r: Recipe): Recipe {
  const t = r.retrain;
  return {
    ...r,
    prune: { ...r.prune, calib_samples: r.prune.reconstruct_n_samples ?? r.prune.calib_samples },
    retrain: {
      ...t,
      full_ft: t.full_ft || t.peft_strategy === "FullFT",
      grad_checkpoint:
        t.gradient_checkpointing === undefined ? t.grad_checkpoint : t.gradient_checkpointing ? "on" : "off",
    },
  };
}

export function validateRecipe(raw: unknown, where = "recipe"): Recipe {
  const r = RecipeSchema.safeParse(raw);
  if (!r.success) throw new RecipeError(formatIssues(r.error, where));
  return resolveAliases(r.data);
}

/** Markdown table of every key with its default and description (the README's recipe reference). */
export function recipeReference(): string {
  const rows: string[] = ["| key | default | meaning |", "|---|---|---|"];
  const walk = (prefix: string, shape: Record<string, z.ZodTypeAny>) => {
    for (const [k, t] of Object.entries(shape)) {
      const def = t._def.defaultValue ? JSON.stringify(t._def.defaultValue()) : "";
      rows.push(`| \`${prefix}${k}\` | ${def ? `\`${def}\`` : "–"} | ${t.description ?? ""} |`);
    }
  };
  rows.push('| `name` | `"run"` | run name |');
  walk("model.", {
    id: Model._def.schema.shape.id,
    llama2c: Model._def.schema.shape.llama2c,
    revision: Model._def.schema.shape.revision,
  });
  walk("prune.", Prune.shape);
  walk("retrain.", Retrain.shape);
  walk("eval.", Eval.shape);
  walk("export.", Export.shape);
  return rows.join("\n");
}
