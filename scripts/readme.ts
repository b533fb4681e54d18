// `npm run readme`: regenerates the CLI reference section of README.md from the command definitions.
import { readFileSync, writeFileSync } from "node:fs";
import { replaceReference } from "../src/cli/reference.js";

writeFileSync("README.md", replaceReference(readFileSync("README.md", "utf8")));
