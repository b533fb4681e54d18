// The shared data directory: PERP_DATA, else ../shared/data relative to the working directory.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

export function dataDir(): string {
  return resolve(process.env.PERP_DATA ?? join("..", "shared", "data"));
}

export function dataPath(...parts: string[]): string {
  return join(dataDir(), ...parts);
}

export class DataError extends Error {}

/** Path of a file under the data directory, or a clear error saying where it was looked for. */
export function requireData(...parts: string[]): string {
  const p = dataPath(...parts);
  if (!existsSync(p))
    throw new DataError(`${parts.join("/")} not found (looked in ${p}; set PERP_DATA to the data directory)`);
  return p;
}
