// Model resolution as huggingface_hub does it: a local folder; else the HF cache (HF_HUB_CACHE, else HF_HOME/hub,
// else ~/.cache/huggingface/hub; models--org--name/{refs,blobs,snapshots}); else a download from the Hub
// (HF_ENDPOINT, HF_TOKEN) into that same cache layout, atomically, so Python tools find the files too.
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { writeFileAtomic } from "./safetensors.js";

export class ResolveError extends Error {}

export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  if (process.env.HF_HOME) return join(process.env.HF_HOME, "hub");
  return join(homedir(), ".cache", "huggingface", "hub");
}

export function repoCacheDir(repo: string): string {
  return join(hubCacheDir(), `models--${repo.replaceAll("/", "--")}`);
}

const REPO_RE = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;
const COMMIT_RE = /^[0-9a-f]{40}$/;

/** The snapshot folder for `repo@revision` in the cache, if it holds a config.json. */
export function cachedSnapshot(repo: string, revision = "main"): string | null {
  const base = repoCacheDir(repo);
  let commit = revision;
  if (!COMMIT_RE.test(revision)) {
    const ref = join(base, "refs", revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, "utf8").trim();
  }
  const snap = join(base, "snapshots", commit);
  if (!existsSync(join(snap, "config.json"))) return null;
  const hasWeights =
    existsSync(join(snap, "model.safetensors")) || existsSync(join(snap, "model.safetensors.index.json"));
  if (!hasWeights) return null;
  const index = join(snap, "model.safetensors.index.json");
  if (existsSync(index)) {
    const shards = new Set(Object.values(JSON.parse(readFileSync(index, "utf8")).weight_map ?? {}) as string[]);
    for (const s of shards) if (!existsSync(join(snap, s))) return null;
  }
  return snap;
}

export interface ResolveOptions {
  revision?: string;
  /** Progress of downloads (file, bytes done, total or null). */
  onProgress?: (file: string, done: number, total: number | null) => void;
}

/** Returns a local folder holding config.json + safetensors (+ tokenizer files) for `idOrDir`. */
export async function resolveModel(idOrDir: string, opts: ResolveOptions = {}): Promise<string> {
  if (existsSync(idOrDir) && statSync(idOrDir).isDirectory()) {
    if (!existsSync(join(idOrDir, "config.json"))) throw new ResolveError(`${idOrDir}: folder has no config.json`);
    return idOrDir;
  }
  if (!REPO_RE.test(idOrDir) || idOrDir.startsWith(".") || idOrDir.includes(".."))
    throw new ResolveError(`${idOrDir}: no such folder, and not a Hugging Face model id (org/name)`);
  const revision = opts.revision ?? "main";
  const cached = cachedSnapshot(idOrDir, revision);
  if (cached) return cached;
  const cacheDir = repoCacheDir(idOrDir);
  if (process.env.HF_HUB_OFFLINE === "1" || process.env.TRANSFORMERS_OFFLINE === "1")
    throw new ResolveError(
      `${idOrDir}@${revision} is not in the Hugging Face cache (looked in ${cacheDir}) and HF_HUB_OFFLINE=1 forbids downloading it`,
    );
  return download(idOrDir, revision, opts);
}

interface FileMeta {
  commit: string;
  etag: string;
  size: number | null;
  body: ReadableStream<Uint8Array> | null;
}

async function fetchFile(repo: string, revision: string, file: string): Promise<FileMeta | null> {
  const endpoint = (process.env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/$/, "");
  const url = `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file}`;
  const headers: Record<string, string> = { "user-agent": "perp/0.1" };
  if (process.env.HF_TOKEN) headers.authorization = `Bearer ${process.env.HF_TOKEN}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, redirect: "manual" });
  } catch (e) {
    throw new ResolveError(
      `cannot download ${repo}/${file} from ${endpoint} (${(e as Error).cause ?? (e as Error).message}); it is not in the cache at ${repoCacheDir(repo)} either (set HF_HUB_OFFLINE=1 to fail fast offline)`,
    );
  }
  if (res.status === 404) return null;
  if (res.status === 401 || res.status === 403)
    throw new ResolveError(
      `${repo}: access denied (${res.status}); the repository may be gated or private: set HF_TOKEN`,
    );
  const commit = res.headers.get("x-repo-commit") ?? "";
  const etag = (res.headers.get("x-linked-etag") ?? res.headers.get("etag") ?? "")
    .replace(/^W\//, "")
    .replaceAll('"', "");
  if (res.status >= 300 && res.status < 400) {
    const loc = res.headers.get("location");
    if (!loc) throw new ResolveError(`${url}: redirect without a location`);
    const target = new URL(loc, url).toString();
    const r2 = await fetch(target, { headers: new URL(target).host === new URL(url).host ? headers : {} });
    if (!r2.ok) throw new ResolveError(`${target}: HTTP ${r2.status}`);
    const len = r2.headers.get("content-length");
    return { commit, etag, size: len ? Number(len) : null, body: r2.body };
  }
  if (!res.ok) throw new ResolveError(`${url}: HTTP ${res.status}`);
  const len = res.headers.get("content-length");
  return { commit, etag, size: len ? Number(len) : null, body: res.body };
}

async function saveBlob(meta: FileMeta, blob: string, file: string, opts: ResolveOptions): Promise<void> {
  if (existsSync(blob)) {
    await meta.body?.cancel();
    return;
  }
  mkdirSync(dirname(blob), { recursive: true });
  const tmp = `${blob}.incomplete`;
  const out = createWriteStream(tmp);
  let done = 0;
  try {
    if (meta.body) {
      const reader = meta.body.getReader();
      for (;;) {
        const { done: end, value } = await reader.read();
        if (end) break;
        if (!out.write(value)) await new Promise<void>((r) => out.once("drain", () => r()));
        done += value.length;
        opts.onProgress?.(file, done, meta.size);
      }
    }
    await new Promise<void>((res, rej) => out.end((e?: Error | null) => (e ? rej(e) : res())));
    if (meta.size !== null && done !== meta.size)
      throw new ResolveError(`${file}: download ended after ${done} of ${meta.size} bytes`);
    renameSync(tmp, blob);
  } catch (e) {
    out.destroy();
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
}

async function download(repo: string, revision: string, opts: ResolveOptions): Promise<string> {
  const base = repoCacheDir(repo);
  const want: { file: string; required: boolean }[] = [
    { file: "config.json", required: true },
    { file: "tokenizer.json", required: false },
    { file: "tokenizer_config.json", required: false },
    { file: "special_tokens_map.json", required: false },
    { file: "generation_config.json", required: false },
    { file: "vocab.json", required: false }, // GPT-2-style tokenizers without tokenizer.json (facebook/opt-*)
    { file: "merges.txt", required: false },
  ];
  let commit = "";
  const place = async (file: string, meta: FileMeta) => {
    if (!commit) commit = meta.commit || revision;
    if (!meta.etag) throw new ResolveError(`${repo}/${file}: the server sent no ETag`);
    const blob = join(base, "blobs", meta.etag);
    await saveBlob(meta, blob, file, opts);
    const link = join(base, "snapshots", commit, file);
    mkdirSync(dirname(link), { recursive: true });
    if (existsSync(link)) unlinkSync(link);
    symlinkSync(relative(dirname(link), blob), link);
  };
  for (const w of want) {
    const meta = await fetchFile(repo, revision, w.file);
    if (!meta) {
      if (w.required)
        throw new ResolveError(`${repo}@${revision}: no ${w.file} on the Hub (repository or revision not found)`);
      continue;
    }
    await place(w.file, meta);
  }
  const index = await fetchFile(repo, revision, "model.safetensors.index.json");
  if (index) {
    await place("model.safetensors.index.json", index);
    const j = JSON.parse(readFileSync(join(base, "snapshots", commit, "model.safetensors.index.json"), "utf8"));
    for (const shard of new Set(Object.values(j.weight_map ?? {}) as string[])) {
      const m = await fetchFile(repo, revision, shard);
      if (!m) throw new ResolveError(`${repo}@${revision}: shard ${shard} listed in the index is missing on the Hub`);
      await place(shard, m);
    }
  } else {
    const m = await fetchFile(repo, revision, "model.safetensors");
    if (!m)
      throw new ResolveError(`${repo}@${revision}: no model.safetensors (perp loads safetensors checkpoints only)`);
    await place("model.safetensors", m);
  }
  if (!COMMIT_RE.test(revision)) {
    mkdirSync(join(base, "refs"), { recursive: true });
    writeFileAtomic(join(base, "refs", revision), [commit]);
  }
  return join(base, "snapshots", commit);
}
