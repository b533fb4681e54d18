import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { commandHelp, editDistance, parseArgs, UsageError } from "../src/cli/args.js";
import { COMMANDS } from "../src/cli/commands.js";
import { cliReference, recipeSection } from "../src/cli/reference.js";

describe("CLI", () => {
  it("README's CLI reference matches the command definitions (run `npm run readme` after changing them)", () => {
    expect(readFileSync("README.md", "utf8")).toContain(cliReference());
    expect(readFileSync("README.md", "utf8")).toContain(recipeSection());
  });

  it("every command has a --help that names its options", () => {
    for (const c of COMMANDS) {
      const h = commandHelp(c);
      expect(h).toContain(`Usage: ${c.usage}`);
      for (const o of c.options) expect(h).toContain(`--${o.name}`);
    }
  });

  it("unknown options suggest the nearest; missing values and required options are usage errors", () => {
    const gen = COMMANDS.find((c) => c.name === "generate")!;
    expect(() => parseArgs(gen, ["--model", "x", "--promt", "hi"])).toThrow(
      /unknown option --promt \(did you mean --prompt\?\)/,
    );
    expect(() => parseArgs(gen, ["--model"])).toThrow(UsageError);
    expect(() => parseArgs(gen, ["--model", "x"])).toThrow(/--prompt is required/);
    expect(() => parseArgs(gen, ["--model", "x", "--prompt", "p", "--seed", "abc"])).toThrow(/--seed must be a number/);
    expect(parseArgs(gen, ["--model=x", "--prompt", "p"]).opts).toMatchObject({
      model: "x",
      prompt: "p",
      "max-new-tokens": 64,
    });
    expect(editDistance("kitten", "sitting")).toBe(3);
  });

  it("retrain --grad-checkpoint and --pack-frozen take auto, on or off, and say so before loading anything", async () => {
    const rt = COMMANDS.find((c) => c.name === "retrain")!;
    const a = parseArgs(rt, [
      "--model",
      "/nonexistent",
      "--steps",
      "1",
      "--out",
      "/nonexistent/o",
      "--grad-checkpoint",
      "maybe",
    ]);
    await expect(rt.run(a)).rejects.toThrow(/--grad-checkpoint must be auto, on, off \(got maybe\)/);
    const b = parseArgs(rt, ["--model", "/nonexistent", "--steps", "1", "--out", "/x/o", "--pack-frozen", "yes"]);
    await expect(rt.run(b)).rejects.toThrow(/--pack-frozen must be auto, on, off \(got yes\)/);
  });

  it("perp --help and an unknown command", () => {
    const run = (args: string[]) => {
      try {
        return {
          out: execFileSync(process.execPath, ["--import", "tsx", "src/cli/run.ts", ...args], {
            encoding: "utf8",
            stdio: "pipe",
          }),
          code: 0,
        };
      } catch (e) {
        const err = e as { stderr: string; status: number };
        return { out: err.stderr, code: err.status };
      }
    };
    const h = run(["--help"]);
    expect(h.code).toBe(0);
    for (const c of COMMANDS) expect(h.out).toContain(c.name);
    const u = run(["prun"]);
    expect(u.code).toBe(2);
    expect(u.out).toMatch(/unknown command 'prun'/);
  });
});

describe("library progress callbacks", () => {
  it("setProgressCallback receives the updates instead of stderr", async () => {
    const { Progress, setProgressCallback } = await import("../src/cli/progress.js");
    const seen: number[] = [];
    const prev = setProgressCallback((e) => seen.push(e.done));
    const p = new Progress("x", 3);
    p.tick();
    p.tick(2, "loss 1.0");
    p.end();
    setProgressCallback(prev);
    expect(seen).toEqual([1, 3]);
  });
});
