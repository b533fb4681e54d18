// `npm run bench [-- --json] [-- --quick]`: prints ONE JSON line with --json, else a readable table. Besides the
// engine numbers it runs `scripts/bench-mem.ts` (a retraining step with checkpointing + AdamW, full vs PEFT, each in a
// fresh process so peak RSS is per mode) unless --quick.
import { execFileSync } from "node:child_process";
import { runEngineBench } from "../src/bench/engine.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const quick = args.includes("--quick");
const result: Record<string, unknown> = runEngineBench({
  quick,
  log: json ? undefined : (m) => process.stderr.write(`${m}\n`),
});
if (!quick) {
  const out = execFileSync(process.execPath, ["--import", "tsx", "scripts/bench-mem.ts"], { encoding: "utf8" });
  Object.assign(result, JSON.parse(out.trim().split("\n").pop() as string));
}
if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
else console.table(result);
