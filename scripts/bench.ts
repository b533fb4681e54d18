// `npm run bench [-- --json] [-- --quick]`: prints ONE JSON line with --json, else a readable table.
import { runEngineBench } from "../src/bench/engine.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const result = runEngineBench({
  quick: args.includes("--quick"),
  log: json ? undefined : (m) => process.stderr.write(`${m}\n`),
});
if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
else console.table(result);
