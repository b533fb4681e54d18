// Linear schedule with warmup, as transformers' get_linear_schedule_with_warmup: optimizer step k (0-based) uses
// lr·k/W during warmup (so the first step has lr 0 when W > 0), then lr·(N − k)/(N − W).
export function warmupSteps(total: number, fraction: number): number {
  return Math.floor(total * fraction);
}

export function lrAt(step: number, total: number, warmup: number, base: number): number {
  if (step < warmup) return (base * step) / Math.max(1, warmup);
  return base * Math.max(0, (total - step) / Math.max(1, total - warmup));
}
