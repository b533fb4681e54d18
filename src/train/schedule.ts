// Linear schedule with warmup, as transformers' get_linear_schedule_with_warmup: optimizer step k (0-based) uses
// lr·k/W during warmup (so the first step has lr 0 when W > 0), then lr·(N − k)/(N − W).

/**
 * Warmup steps for a warmup fraction, rounded as the reference code rounds them: retraining runs through transformers'
 * Trainer, whose get_warmup_steps takes ceil(N · ratio) (12 steps: 2 warmup steps); PERP's reconstruct
 * loop takes int(0.1 · N) (floor).
 */
export function warmupSteps(total: number, fraction: number, rounding: "ceil" | "floor" = "ceil"): number {
  return rounding === "ceil" ? Math.ceil(total * fraction) : Math.floor(total * fraction);
}

export function lrAt(step: number, total: number, warmup: number, base: number): number {
  if (step < warmup) return (base * step) / Math.max(1, warmup);
  return base * Math.max(0, (total - step) / Math.max(1, total - warmup));
}
