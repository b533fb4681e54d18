// A small declarative argument parser: commands declare their options once; --help text and README reference are
// generated from the same definitions, so they cannot drift.
export type OptType = "string" | "number" | "boolean";

export interface OptDef {
  name: string;
  type: OptType;
  description: string;
  default?: string | number | boolean;
  required?: boolean;
}

export interface CommandDef {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  options: OptDef[];
  positionals?: { name: string; description: string; required?: boolean }[];
  run(args: ParsedArgs): Promise<void> | void;
}

export interface ParsedArgs {
  opts: Record<string, string | number | boolean | undefined>;
  positionals: string[];
}

export class UsageError extends Error {}

/** The closest of `names` to `name` by edit distance, if close enough to be a typo. */
export function nearest(name: string, names: string[]): string | null {
  let best: string | null = null;
  let bestD = Number.POSITIVE_INFINITY;
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestD) {
      bestD = d;
      best = n;
    }
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

export function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return dp[a.length][b.length];
}

export function parseArgs(cmd: CommandDef, argv: string[]): ParsedArgs {
  const opts: ParsedArgs["opts"] = {};
  const positionals: string[] = [];
  for (const o of cmd.options) if (o.default !== undefined) opts[o.name] = o.default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      positionals.push(a);
      continue;
    }
    const [raw, inline] = a.slice(2).split(/=(.*)/s, 2);
    const def = cmd.options.find((o) => o.name === raw);
    if (!def) {
      const s = nearest(
        raw,
        cmd.options.map((o) => o.name),
      );
      throw new UsageError(`perp ${cmd.name}: unknown option --${raw}${s ? ` (did you mean --${s}?)` : ""}`);
    }
    if (def.type === "boolean") {
      opts[def.name] = inline === undefined ? true : inline !== "false";
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new UsageError(`perp ${cmd.name}: --${raw} needs a value`);
    if (def.type === "number") {
      const n = Number(v);
      if (!Number.isFinite(n)) throw new UsageError(`perp ${cmd.name}: --${raw} must be a number (got '${v}')`);
      opts[def.name] = n;
    } else opts[def.name] = v;
  }
  for (const o of cmd.options)
    if (o.required && opts[o.name] === undefined) throw new UsageError(`perp ${cmd.name}: --${o.name} is required`);
  const req = (cmd.positionals ?? []).filter((p) => p.required).length;
  if (positionals.length < req)
    throw new UsageError(
      `perp ${cmd.name}: expected ${(cmd.positionals ?? []).map((p) => `<${p.name}>`).join(" ")}\nusage: ${cmd.usage}`,
    );
  return { opts, positionals };
}

export function commandHelp(cmd: CommandDef): string {
  const lines = [`Usage: ${cmd.usage}`, "", cmd.summary];
  if (cmd.description) lines.push("", cmd.description);
  // One column for the names, as wide as the longest (at least 28) plus two spaces.
  const names = [
    ...(cmd.positionals ?? []).map((p) => `  <${p.name}>`),
    ...cmd.options.map((o) => `  --${o.name}${o.type === "boolean" ? "" : ` <${o.type}>`}`),
  ];
  const width = Math.max(28, ...names.map((n) => n.length + 2));
  if (cmd.positionals?.length) {
    lines.push("", "Arguments:");
    for (const p of cmd.positionals) lines.push(`  <${p.name}>`.padEnd(width) + p.description);
  }
  if (cmd.options.length) {
    lines.push("", "Options:");
    for (const o of cmd.options) {
      const flag = `  --${o.name}${o.type === "boolean" ? "" : ` <${o.type}>`}`;
      const def = o.default !== undefined ? ` (default: ${o.default})` : o.required ? " (required)" : "";
      lines.push(flag.padEnd(width) + o.description + def);
    }
  }
  return lines.join("\n");
}

export function mainHelp(cmds: CommandDef[], version: string): string {
  return [
    `perp ${version} — prune LLMs and recover them by retraining a tiny parameter subset (PERP, arXiv 2312.15230)`,
    "",
    "Usage: perp <command> [options]   (perp <command> --help for details)",
    "",
    "Commands:",
    ...cmds.map((c) => `  ${c.name.padEnd(12)}${c.summary}`),
    "",
    "Environment: PERP_THREADS (threads, default: the CPUs this process may use, i.e. its affinity mask capped by a",
    "cgroup CPU quota), PERP_CPU=avx512|avx2|scalar (force a kernel path), PERP_SPIN_MS (how long idle worker threads",
    "spin before sleeping, default 20), PERP_HUGEPAGES=0 (no 2 MiB pages for large tensors), PERP_NATIVE=0 (pure-TS",
    "kernels), PERP_DATA (data directory, default ../shared/data).",
  ].join("\n");
}
