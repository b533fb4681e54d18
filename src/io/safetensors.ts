// safetensors (https://github.com/huggingface/safetensors): 8-byte LE header length, JSON header, raw LE tensor bytes.
// Reading maps the file (copy-on-write) and hands out per-tensor views lazily; writing is atomic (temp + rename) and
// shards above a size limit with a model.safetensors.index.json, as transformers' save_pretrained does.
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { K } from "../tensor/native.js";

export type DType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "BOOL"
  | "U16"
  | "U32"
  | "U64"
  | "F8_E4M3"
  | "F8_E5M2";

export const DTYPE_SIZE: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

export class SafetensorsError extends Error {}

const MAX_HEADER = 100 * 1024 * 1024;

/** Parses and validates a header; `fileSize` bounds the offsets. Throws SafetensorsError naming `file`. */
export function parseHeader(
  bytes: Uint8Array,
  file: string,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string>; dataStart: number } {
  const fail = (m: string): never => {
    throw new SafetensorsError(`${file}: ${m}`);
  };
  if (bytes.length < 8)
    fail(`truncated file (${bytes.length} bytes; a safetensors file starts with an 8-byte header length)`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n > MAX_HEADER) fail(`header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
  if (8 + n > bytes.length) fail(`header length ${n} runs beyond the end of the file (${bytes.length} bytes)`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    fail(`invalid header JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) fail("header is not a JSON object");
  const dataLen = bytes.length - 8 - n;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof v !== "object" || v === null || Array.isArray(v)) fail("__metadata__ must be an object of strings");
      for (const [k, s] of Object.entries(v as object))
        if (typeof s !== "string") fail(`__metadata__.${k} must be a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== "object" || t === null) fail(`tensor '${name}': entry is not an object`);
    if (typeof t.dtype !== "string" || !(t.dtype in DTYPE_SIZE))
      fail(`tensor '${name}': unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail(`tensor '${name}': shape must be a list of non-negative integers`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail(`tensor '${name}': data_offsets must be two non-negative integers`);
    const [begin, end] = off as number[];
    if (end < begin) fail(`tensor '${name}': data_offsets [${begin}, ${end}] are reversed`);
    if (end > dataLen)
      fail(`tensor '${name}': data_offsets [${begin}, ${end}] are outside the data section (${dataLen} bytes)`);
    const shape = t.shape as number[];
    const want = shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype as DType];
    if (want !== end - begin)
      fail(`tensor '${name}': ${t.dtype} [${shape}] needs ${want} bytes but data_offsets span ${end - begin}`);
    tensors.set(name, { dtype: t.dtype as DType, shape, begin, end });
  }
  const sorted = [...tensors.entries()].filter(([, t]) => t.end > t.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i][1].begin < sorted[i - 1][1].end)
      fail(`tensors '${sorted[i - 1][0]}' and '${sorted[i][0]}' have overlapping data_offsets`);
  return { tensors, metadata, dataStart: 8 + n };
}

/** bf16 / f16 → f32 (exact). */
export function halfToF32(bits: Uint16Array, dtype: "BF16" | "F16"): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === "BF16") {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
    return out;
  }
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] =
      e === 0
        ? s * m * 2 ** -24
        : e === 31
          ? m
            ? Number.NaN
            : s * Number.POSITIVE_INFINITY
          : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** f32 → bf16 / f16 with round-to-nearest-even (as torch's .to()). */
export function f32ToHalf(x: Float32Array, dtype: "BF16" | "F16"): Uint16Array {
  const out = new Uint16Array(x.length);
  if (dtype === "BF16") {
    const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
    for (let i = 0; i < x.length; i++) {
      const v = u[i];
      if ((v & 0x7fffffff) > 0x7f800000)
        out[i] = (v >>> 16) | 0x40; // NaN stays NaN
      else out[i] = (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
    }
    return out;
  }
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < x.length; i++) {
    f[0] = x[i];
    const v = u[0];
    const sign = (v >>> 16) & 0x8000;
    const exp = (v >>> 23) & 0xff;
    let mant = v & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      let r = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      if (rem > half || (rem === half && r & 1)) r++;
      out[i] = sign | r;
      continue;
    }
    let r = mant >>> 13;
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
      r++;
      if (r === 0x400) {
        r = 0;
        e++;
        if (e >= 31) {
          out[i] = sign | 0x7c00;
          continue;
        }
      }
    }
    out[i] = sign | (e << 10) | r;
  }
  return out;
}

/** One safetensors file, memory-mapped; tensors are materialised lazily, one at a time. */
export class SafetensorsFile {
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private readonly buf: ArrayBuffer;
  private readonly dataStart: number;

  constructor(readonly path: string) {
    if (!existsSync(path)) throw new SafetensorsError(`${path}: no such file`);
    this.buf = K.mmapFile(path);
    const h = parseHeader(new Uint8Array(this.buf), path);
    this.tensors = h.tensors;
    this.metadata = h.metadata;
    this.dataStart = h.dataStart;
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** The raw little-endian bytes (a view into the mapping). */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return new Uint8Array(this.buf, this.dataStart + t.begin, t.end - t.begin);
  }

  /** The tensor as float32: a zero-copy view for aligned F32, a widened copy for F16/BF16/F64. */
  f32(name: string): Float32Array {
    const t = this.info(name);
    const off = this.dataStart + t.begin;
    const n = (t.end - t.begin) / DTYPE_SIZE[t.dtype];
    const copy = <T extends ArrayBufferView>(ctor: {
      new (b: ArrayBuffer, o: number, n: number): T;
      BYTES_PER_ELEMENT: number;
    }): T =>
      off % ctor.BYTES_PER_ELEMENT === 0
        ? new ctor(this.buf, off, n)
        : new ctor(this.buf.slice(off, off + n * ctor.BYTES_PER_ELEMENT), 0, n);
    switch (t.dtype) {
      case "F32":
        return copy(Float32Array);
      case "BF16":
      case "F16":
        return halfToF32(copy(Uint16Array), t.dtype);
      case "F64":
        return Float32Array.from(copy(Float64Array));
      default:
        throw new SafetensorsError(`${this.path}: tensor '${name}' has dtype ${t.dtype}, expected a float type`);
    }
  }

  /** Raw 16-bit storage of an F16/BF16 tensor (for frozen weights kept in their file dtype). */
  half(name: string): Uint16Array {
    const t = this.info(name);
    if (t.dtype !== "F16" && t.dtype !== "BF16")
      throw new SafetensorsError(`${this.path}: '${name}' is ${t.dtype}, not F16/BF16`);
    const off = this.dataStart + t.begin;
    const n = (t.end - t.begin) / 2;
    return off % 2 === 0 ? new Uint16Array(this.buf, off, n) : new Uint16Array(this.buf.slice(off, off + 2 * n));
  }
}

/** A set of tensors spread over one or more files (a sharded checkpoint via model.safetensors.index.json). */
export class SafetensorsStore {
  private readonly files = new Map<string, SafetensorsFile>();
  readonly weightMap = new Map<string, string>();
  readonly metadata: Record<string, unknown> = {};

  constructor(readonly dir: string) {
    const index = join(dir, "model.safetensors.index.json");
    if (existsSync(index)) {
      let j: { weight_map?: Record<string, string>; metadata?: Record<string, unknown> };
      try {
        j = JSON.parse(readFileSync(index, "utf8"));
      } catch (e) {
        throw new SafetensorsError(`${index}: invalid JSON (${(e as Error).message})`);
      }
      if (!j.weight_map || typeof j.weight_map !== "object") throw new SafetensorsError(`${index}: missing weight_map`);
      for (const [name, file] of Object.entries(j.weight_map)) {
        if (basename(file) !== file)
          throw new SafetensorsError(`${index}: shard name '${file}' must be a plain file name`);
        this.weightMap.set(name, file);
      }
      Object.assign(this.metadata, j.metadata ?? {});
      for (const file of new Set(this.weightMap.values())) {
        const f = this.open(file);
        for (const [name, shard] of this.weightMap)
          if (shard === file && !f.tensors.has(name))
            throw new SafetensorsError(
              `${join(dir, file)}: tensor '${name}' listed in the index is missing from the shard`,
            );
      }
    } else {
      const single = join(dir, "model.safetensors");
      if (!existsSync(single)) {
        const bin = ["pytorch_model.bin", "pytorch_model.bin.index.json"].find((f) => existsSync(join(dir, f)));
        throw new SafetensorsError(
          `${dir}: no model.safetensors or model.safetensors.index.json` +
            (bin
              ? ` (it has ${bin}: perp reads safetensors only, never pickled checkpoints; convert once with transformers: ` +
                `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out))`
              : ""),
        );
      }
      const f = this.open("model.safetensors");
      for (const name of f.names) this.weightMap.set(name, "model.safetensors");
      Object.assign(this.metadata, f.metadata);
    }
  }

  private open(file: string): SafetensorsFile {
    let f = this.files.get(file);
    if (!f) {
      f = new SafetensorsFile(join(this.dir, file));
      this.files.set(file, f);
    }
    return f;
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  get names(): string[] {
    return [...this.weightMap.keys()];
  }

  file(name: string): SafetensorsFile {
    const f = this.weightMap.get(name);
    if (!f) throw new SafetensorsError(`${this.dir}: no tensor named '${name}'`);
    return this.open(f);
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  f32(name: string): Float32Array {
    return this.file(name).f32(name);
  }
}

export interface TensorOut {
  name: string;
  dtype: DType;
  shape: number[];
  /** Little-endian bytes, or a float array that is converted to `dtype` (F32/F16/BF16). */
  data: Uint8Array | Float32Array | Uint16Array;
}

function tensorBytes(t: TensorOut): Uint8Array {
  let d: ArrayBufferView = t.data;
  if (t.data instanceof Float32Array && (t.dtype === "BF16" || t.dtype === "F16")) d = f32ToHalf(t.data, t.dtype);
  else if (t.data instanceof Float32Array && t.dtype !== "F32")
    throw new SafetensorsError(`${t.name}: cannot write float32 data as ${t.dtype}`);
  const b = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  const want = t.shape.reduce((a, c) => a * c, 1) * DTYPE_SIZE[t.dtype];
  if (b.length !== want)
    throw new SafetensorsError(`${t.name}: ${t.dtype} [${t.shape}] needs ${want} bytes, got ${b.length}`);
  return b;
}

/** Writes `data` to `path` atomically: a temp file in the same folder, fsync, then rename. */
export function writeFileAtomic(path: string, chunks: (Uint8Array | string)[]): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const fd = openSync(tmp, "w");
  try {
    for (const c of chunks) {
      const b = typeof c === "string" ? Buffer.from(c, "utf8") : c;
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, Math.min(b.length - off, 1 << 30));
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {}
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
}

/** Serialises one safetensors file (header padded with spaces to 8-byte alignment, as the reference writer). */
export function writeSafetensors(path: string, tensors: TensorOut[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  const bodies: Uint8Array[] = [];
  let off = 0;
  for (const t of tensors) {
    const b = tensorBytes(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + b.length] };
    bodies.push(b);
    off += b.length;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += " ".repeat(pad);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(Buffer.byteLength(json)), true);
  writeFileAtomic(path, [len, json, ...bodies]);
}

/**
 * Writes a checkpoint into `dir`: one model.safetensors, or shards model-0000i-of-0000n.safetensors plus
 * model.safetensors.index.json when the total exceeds maxShardBytes (default 5 GB, transformers' default).
 */
export function saveCheckpoint(
  dir: string,
  tensors: TensorOut[],
  opts: { maxShardBytes?: number; metadata?: Record<string, string> } = {},
): string[] {
  const max = opts.maxShardBytes ?? 5e9;
  const shards: TensorOut[][] = [[]];
  let size = 0;
  let total = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, c) => a * c, 1) * DTYPE_SIZE[t.dtype];
    if (size > 0 && size + n > max) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += n;
    total += n;
  }
  const metadata = { format: "pt", ...(opts.metadata ?? {}) };
  if (shards.length === 1) {
    writeSafetensors(join(dir, "model.safetensors"), tensors, metadata);
    return ["model.safetensors"];
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const names = shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((s, i) => {
    writeSafetensors(join(dir, names[i]), s, metadata);
    for (const t of s) weightMap[t.name] = names[i];
  });
  writeFileAtomic(join(dir, "model.safetensors.index.json"), [
    `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`,
  ]);
  return [...names, "model.safetensors.index.json"];
}

export function fileSize(path: string): number {
  return statSync(path).size;
}
