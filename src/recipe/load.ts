// Recipe files: YAML → ${VAR:-default} expansion → CLI overrides (key.path=value) → sweep expansion (a list where the
// schema wants one value becomes a grid of runs) → validation.
import { existsSync, readFileSync } from "node:fs";
import YAML from "yaml";
import { LIST_KEYS, type Recipe, RecipeError, validateRecipe } from "./schema.js";

function expandEnv(v: unknown): unknown {
  if (typeof v === "string")
    return v.replace(
      /\$\{(\w+)(?::-([^}]*))?\}/g,
      (_, name: string, def: string | undefined) => process.env[name] ?? def ?? "",
    );
  if (Array.isArray(v)) return v.map(expandEnv);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expandEnv(x)]));
  return v;
}

export function applyOverride(obj: Record<string, unknown>, assignment: string): void {
  const i = assignment.indexOf("=");
  if (i <= 0) throw new RecipeError(`override '${assignment}' is not key.path=value`);
  const path = assignment.slice(0, i).split(".");
  const value = YAML.parse(assignment.slice(i + 1));
  let o = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof o[k] !== "object" || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]] = value;
}

/** Every combination of the sweep lists, as separate raw recipes (name gets a suffix per swept value). */
export function expandSweeps(raw: Record<string, unknown>): Record<string, unknown>[] {
  const sweeps: { path: string[]; values: unknown[] }[] = [];
  const walk = (o: Record<string, unknown>, path: string[]) => {
    for (const [k, v] of Object.entries(o)) {
      const p = [...path, k];
      if (Array.isArray(v) && !LIST_KEYS.has(p.join("."))) sweeps.push({ path: p, values: v });
      else if (v && typeof v === "object" && !Array.isArray(v)) walk(v as Record<string, unknown>, p);
    }
  };
  walk(raw, []);
  let out: { r: Record<string, unknown>; tag: string[] }[] = [{ r: raw, tag: [] }];
  for (const s of sweeps) {
    const next: typeof out = [];
    for (const { r, tag } of out)
      for (const v of s.values) {
        const c = structuredClone(r);
        let o = c;
        for (const k of s.path.slice(0, -1)) o = o[k] as Record<string, unknown>;
        o[s.path[s.path.length - 1]] = v;
        next.push({ r: c, tag: [...tag, `${s.path[s.path.length - 1]}=${v}`] });
      }
    out = next;
  }
  return out.map(({ r, tag }) => (tag.length ? { ...r, name: `${(r.name as string) ?? "run"}-${tag.join("-")}` } : r));
}

export function loadRecipes(path: string, overrides: string[] = []): Recipe[] {
  if (!existsSync(path)) throw new RecipeError(`${path}: recipe file not found`);
  let raw: unknown;
  try {
    raw = YAML.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new RecipeError(`${path}: invalid YAML (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw))
    throw new RecipeError(`${path}: a recipe is a YAML mapping`);
  const obj = expandEnv(raw) as Record<string, unknown>;
  for (const o of overrides) applyOverride(obj, o);
  return expandSweeps(obj).map((r, _i, all) => validateRecipe(r, all.length > 1 ? `${path} [${r.name}]` : path));
}
