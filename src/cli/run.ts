// Development entry (tsx): same as bin/perp.js but from the TypeScript sources.
import { main } from "./main.js";

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
