// Model resolution against a small Hub on 127.0.0.1 serving the real resolve-URL layout and headers
// (LFS files: 302 with X-Linked-Etag + X-Repo-Commit; small files: 200 with ETag), then the HF cache layout.
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cachedSnapshot, repoCacheDir, resolveModel } from "../src/io/hf-hub.js";
import { saveCheckpoint } from "../src/io/safetensors.js";
import { loadModel } from "../src/models/load.js";
import { MICRO_LLAMA } from "./fixtures.js";
import { randF32 } from "./helpers.js";

const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const files = new Map<string, Buffer>();
let server: Server;
let endpoint = "";
const requests: string[] = [];
let requireToken = false;
let shard2 = "";

beforeAll(async () => {
  const src = mkdtempSync(join(tmpdir(), "perp-hubsrc-"));
  const cfg = { ...MICRO_LLAMA, tie_word_embeddings: true };
  const shapes: [string, number[]][] = [
    ["model.embed_tokens.weight", [11, 8]],
    ["model.layers.0.input_layernorm.weight", [8]],
    ["model.layers.0.self_attn.q_proj.weight", [8, 8]],
    ["model.layers.0.self_attn.k_proj.weight", [4, 8]],
    ["model.layers.0.self_attn.v_proj.weight", [4, 8]],
    ["model.layers.0.self_attn.o_proj.weight", [8, 8]],
    ["model.layers.0.post_attention_layernorm.weight", [8]],
    ["model.layers.0.mlp.gate_proj.weight", [12, 8]],
    ["model.layers.0.mlp.up_proj.weight", [12, 8]],
    ["model.layers.0.mlp.down_proj.weight", [8, 12]],
    ["model.norm.weight", [8]],
  ];
  saveCheckpoint(
    src,
    shapes.map(([name, shape], i) => ({
      name,
      dtype: "F32",
      shape,
      data: randF32(
        shape.reduce((a, b) => a * b, 1),
        i,
      ),
    })),
    { maxShardBytes: 700 },
  );
  writeFileSync(join(src, "config.json"), JSON.stringify(cfg));
  for (const f of readdirSync(src)) files.set(f, readFileSync(join(src, f)));
  shard2 = [...files.keys()].filter((f) => f.endsWith(".safetensors")).sort()[1];
  server = createServer((req, res) => {
    requests.push(req.url ?? "");
    if (requireToken && req.headers.authorization !== "Bearer sekrit") {
      res.writeHead(401).end();
      return;
    }
    const cdn = /^\/cdn\/(.+)$/.exec(req.url ?? "");
    if (cdn) {
      const f = files.get(decodeURIComponent(cdn[1]));
      res.writeHead(f ? 200 : 404, { "content-length": f?.length ?? 0 }).end(f);
      return;
    }
    const m = /^\/org\/tiny\/resolve\/([^/]+)\/(.+)$/.exec(req.url ?? "");
    const f = m ? files.get(m[2]) : undefined;
    if (!m || !f || (m[1] !== "main" && m[1] !== COMMIT)) {
      res.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
      return;
    }
    if (m[2].endsWith(".safetensors")) {
      const sha = createHash("sha256").update(f).digest("hex");
      res
        .writeHead(302, {
          location: `/cdn/${encodeURIComponent(m[2])}`,
          "x-repo-commit": COMMIT,
          "x-linked-etag": `"${sha}"`,
          "x-linked-size": f.length,
        })
        .end();
    } else {
      const sha1 = createHash("sha1").update(f).digest("hex");
      res.writeHead(200, { etag: `"${sha1}"`, "x-repo-commit": COMMIT, "content-length": f.length }).end(f);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => {
  server.close();
});

function withEnv<T>(env: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const old: Record<string, string | undefined> = {};
  for (const k of Object.keys(env)) {
    old[k] = process.env[k];
    if (env[k] === undefined) delete process.env[k];
    else process.env[k] = env[k];
  }
  return fn().finally(() => {
    for (const k of Object.keys(old)) {
      if (old[k] === undefined) delete process.env[k];
      else process.env[k] = old[k];
    }
  });
}

describe("Hub download into the HF cache layout", () => {
  const cache = mkdtempSync(join(tmpdir(), "perp-hfcache-"));

  it("downloads a sharded model, links snapshots to blobs, writes refs/main, then loads it", async () => {
    await withEnv(
      { HF_HUB_CACHE: cache, HF_ENDPOINT: endpoint, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined },
      async () => {
        const dir = await resolveModel("org/tiny");
        expect(dir).toBe(join(repoCacheDir("org/tiny"), "snapshots", COMMIT));
        expect(readFileSync(join(repoCacheDir("org/tiny"), "refs", "main"), "utf8")).toBe(COMMIT);
        const link = join(dir, shard2);
        expect(lstatSync(link).isSymbolicLink()).toBe(true);
        expect(readlinkSync(link)).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/);
        expect(readlinkSync(join(dir, "config.json"))).toMatch(/^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/);
        expect(Buffer.compare(readFileSync(link), files.get(shard2)!)).toBe(0);
        const m = await loadModel("org/tiny");
        expect(m.model.config.hidden_size).toBe(8);
        expect(existsSync(join(repoCacheDir("org/tiny"), "blobs"))).toBe(true);
      },
    );
  });

  it("a cached model resolves offline without any request", async () => {
    await withEnv({ HF_HUB_CACHE: cache, HF_ENDPOINT: endpoint, HF_HUB_OFFLINE: "1" }, async () => {
      const before = requests.length;
      expect(await resolveModel("org/tiny")).toBe(cachedSnapshot("org/tiny"));
      expect(await resolveModel("org/tiny", { revision: COMMIT })).toBe(cachedSnapshot("org/tiny"));
      expect(requests.length).toBe(before);
    });
  });

  it("offline and not cached: the error names the model and the cache path searched", async () => {
    await withEnv({ HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" }, async () => {
      await expect(resolveModel("org/other")).rejects.toThrow(
        new RegExp(
          `org/other@main is not in the Hugging Face cache \\(looked in ${repoCacheDir("org/other")}\\) and HF_HUB_OFFLINE=1`,
        ),
      );
    });
  });

  it("no network: a clear error; HF_HOME/hub is the cache when HF_HUB_CACHE is unset", async () => {
    const home = mkdtempSync(join(tmpdir(), "perp-hfhome-"));
    await withEnv(
      { HF_HUB_CACHE: undefined, HF_HOME: home, HF_ENDPOINT: "http://127.0.0.1:9", HF_HUB_OFFLINE: undefined },
      async () => {
        expect(repoCacheDir("a/b")).toBe(join(home, "hub", "models--a--b"));
        await expect(resolveModel("a/b")).rejects.toThrow(
          /cannot download a\/b\/config.json from http:\/\/127.0.0.1:9 .*not in the cache at/,
        );
      },
    );
  });

  it("gated/private repositories ask for HF_TOKEN, and HF_TOKEN is sent", async () => {
    const c2 = mkdtempSync(join(tmpdir(), "perp-hfcache2-"));
    requireToken = true;
    try {
      await withEnv(
        { HF_HUB_CACHE: c2, HF_ENDPOINT: endpoint, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined },
        async () => {
          await expect(resolveModel("org/tiny")).rejects.toThrow(/access denied \(401\).*HF_TOKEN/);
        },
      );
      await withEnv(
        { HF_HUB_CACHE: c2, HF_ENDPOINT: endpoint, HF_HUB_OFFLINE: undefined, HF_TOKEN: "sekrit" },
        async () => {
          expect(existsSync(join(await resolveModel("org/tiny"), "config.json"))).toBe(true);
        },
      );
    } finally {
      requireToken = false;
    }
  });
});
