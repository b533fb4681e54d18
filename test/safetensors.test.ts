import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  f32ToHalf,
  halfToF32,
  parseHeader,
  SafetensorsError,
  SafetensorsFile,
  SafetensorsStore,
  saveCheckpoint,
  writeSafetensors,
} from "../src/io/safetensors.js";
import { randF32 } from "./helpers.js";

const tmp = () => mkdtempSync(join(tmpdir(), "perp-st-"));

function rawFile(header: unknown, data: Uint8Array): Buffer {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

describe("safetensors", () => {
  it("round-trips F32, F16, BF16 and raw integer tensors with metadata", () => {
    const dir = tmp();
    const a = randF32(12, 1);
    const b = f32ToHalf(randF32(6, 2), "BF16");
    const c = f32ToHalf(randF32(5, 3), "F16");
    const ints = new Uint8Array(new Int32Array([1, -2, 3]).buffer);
    writeSafetensors(
      join(dir, "x.safetensors"),
      [
        { name: "a", dtype: "F32", shape: [3, 4], data: a },
        { name: "b", dtype: "BF16", shape: [6], data: b },
        { name: "c", dtype: "F16", shape: [5], data: c },
        { name: "i", dtype: "I32", shape: [3], data: ints },
      ],
      { format: "pt", note: "hi" },
    );
    const f = new SafetensorsFile(join(dir, "x.safetensors"));
    expect(f.metadata).toEqual({ format: "pt", note: "hi" });
    expect(Array.from(f.f32("a"))).toEqual(Array.from(a));
    expect(Array.from(f.half("b"))).toEqual(Array.from(b));
    expect(Array.from(f.f32("b"))).toEqual(Array.from(halfToF32(b, "BF16")));
    expect(Array.from(f.f32("c"))).toEqual(Array.from(halfToF32(c, "F16")));
    expect(Array.from(new Int32Array(f.bytes("i").slice().buffer))).toEqual([1, -2, 3]);
    expect(f.info("a").shape).toEqual([3, 4]);
    // the header is 8-byte aligned, so F32 tensors are zero-copy views
    expect(f.f32("a").buffer.byteLength).toBeGreaterThan(48);
  });

  it("f16/bf16 conversion rounds to nearest even and is exact on representable values", () => {
    const x = Float32Array.of(1, -2.5, 65504, 1e-8, 0.1, Math.PI, 70000, -0);
    expect(Array.from(halfToF32(f32ToHalf(x, "F16"), "F16")).slice(0, 3)).toEqual([1, -2.5, 65504]);
    expect(halfToF32(f32ToHalf(x, "F16"), "F16")[6]).toBe(Number.POSITIVE_INFINITY);
    const bf = halfToF32(f32ToHalf(x, "BF16"), "BF16");
    expect(Array.from(halfToF32(f32ToHalf(bf, "BF16"), "BF16"))).toEqual(Array.from(bf));
    expect(Math.abs(bf[4] - 0.1)).toBeLessThan(0.001);
  });

  it("shards above the size limit and reads back through the index", () => {
    const dir = tmp();
    const ts = [0, 1, 2, 3].map((i) => ({ name: `w${i}`, dtype: "F32" as const, shape: [100], data: randF32(100, i) }));
    const files = saveCheckpoint(dir, ts, { maxShardBytes: 900 });
    expect(files).toContain("model.safetensors.index.json");
    expect(files.filter((f) => f.endsWith(".safetensors")).length).toBe(2);
    const st = new SafetensorsStore(dir);
    for (const t of ts) expect(Array.from(st.f32(t.name))).toEqual(Array.from(t.data));
    expect(readdirSync(dir).some((f) => f.includes(".tmp-"))).toBe(false);
  });

  it("a folder with only a pickled checkpoint says so and how to convert it", () => {
    const dir = tmp();
    expect(() => new SafetensorsStore(dir)).toThrow(/no model.safetensors or model.safetensors.index.json$/);
    writeFileSync(join(dir, "pytorch_model.bin"), "");
    expect(() => new SafetensorsStore(dir)).toThrow(
      /it has pytorch_model.bin: perp reads safetensors only.*save_pretrained/,
    );
  });

  describe("bad input gives a clear error naming the file", () => {
    const cases: [string, Buffer | Uint8Array, RegExp][] = [
      ["truncated", Buffer.from([1, 2, 3]), /truncated file/],
      ["header beyond file", rawFile("{}", new Uint8Array(0)).subarray(0, 9), /runs beyond the end/],
      ["invalid JSON", rawFile("{nope", new Uint8Array(0)), /invalid header JSON/],
      ["not an object", rawFile("[1]", new Uint8Array(0)), /not a JSON object/],
      [
        "unknown dtype",
        rawFile({ a: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
        /unknown dtype/,
      ],
      [
        "out of range",
        rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(4)),
        /outside the data section/,
      ],
      [
        "size mismatch",
        rawFile({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        /needs 12 bytes/,
      ],
      [
        "overlap",
        rawFile(
          {
            a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
            b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
          },
          new Uint8Array(12),
        ),
        /overlapping/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      it(name, () => {
        const p = join(tmp(), `${name.replace(/ /g, "_")}.safetensors`);
        writeFileSync(p, bytes);
        expect(() => new SafetensorsFile(p)).toThrow(SafetensorsError);
        expect(() => new SafetensorsFile(p)).toThrow(re);
        expect(() => new SafetensorsFile(p)).toThrow(p);
      });
    }
  });

  it("fuzz: random and mutated headers never crash or hang the parser", () => {
    const good = rawFile(
      { a: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] }, __metadata__: { k: "v" } },
      new Uint8Array(16),
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc
            .array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 })
            .map((muts) => {
              const b = Uint8Array.from(good);
              for (const [i, v] of muts) b[i] = v;
              return b;
            }),
        ),
        (bytes) => {
          try {
            parseHeader(bytes, "fuzz.safetensors");
          } catch (e) {
            expect(e).toBeInstanceOf(SafetensorsError);
          }
        },
      ),
      { numRuns: 2000, seed: 11 },
    );
    expect(readFileSync).toBeDefined();
  });
});
