// perp CLI entry: a thin layer over the library; every command is declared once in commands.ts.
import { commandHelp, mainHelp, parseArgs, UsageError } from "./args.js";
import { COMMANDS, VERSION } from "./commands.js";

export async function main(argv: string[]): Promise<number> {
  // `perp ... | head` closes stdout early: that is not an error.
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(0);
    throw e;
  });
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    const target = name === "help" && rest[0] ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    process.stdout.write(`${target ? commandHelp(target) : mainHelp(COMMANDS, VERSION)}\n`);
    return 0;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`perp: unknown command '${name}'. Commands: ${COMMANDS.map((c) => c.name).join(", ")}\n`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${commandHelp(cmd)}\n`);
    return 0;
  }
  try {
    await cmd.run(parseArgs(cmd, rest));
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    process.stderr.write(`perp ${name}: ${(e as Error).message}\n`);
    if (process.env.PERP_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return 1;
  }
}
