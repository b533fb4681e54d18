// Loads the C++ addon (build/Release/perp_native.node); PERP_NATIVE=0, or a missing build, selects the pure-TS twins.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ref from "./ref/kernels.js";

export type CpuPath = "avx512" | "avx2" | "scalar";
export interface CpuInfo {
  active: CpuPath;
  best: CpuPath;
  supported: CpuPath[];
  mr: number;
  nr: number;
}

type Ref = typeof ref;
/** The kernel set: every native export, with the signatures of the TS twins in ref/kernels.ts. */
export interface Kernels
  extends Pick<
    Ref,
    | "gemm"
    | "biasAdd"
    | "biasGrad"
    | "rmsnormFwd"
    | "rmsnormBwd"
    | "layernormFwd"
    | "layernormBwd"
    | "rope"
    | "attentionFwd"
    | "attentionBwd"
    | "attentionFwdRows"
    | "actFwd"
    | "actBwd"
    | "swigluFwd"
    | "swigluBwd"
    | "xent"
    | "adamw"
    | "ew"
    | "maskApply"
    | "maskedScaleAdd"
    | "colSumsq"
    | "rowLogsumexp"
    | "topkPrune"
    | "nmKeep"
    | "cholesky"
    | "trtriLower"
    | "sparsegptObs"
  > {
  mmapFile(path: string): ArrayBuffer;
  /** A zeroed Float32Array of n elements whose first element sits on a 64-byte boundary (a cache line): a view into an
   * ArrayBuffer 64 bytes longer than the data, so read `.buffer` only with the view's byteOffset and length. */
  allocF32(n: number): Float32Array;
  /** The largest power of two, up to 4096, dividing the address of the array's first element (for tests). */
  alignment(a: ArrayBufferView): number;
  /** Asks for 2 MiB pages (transparent huge pages) behind the array's aligned interior, for a large buffer not yet
   * written; returns the bytes advised (0: none, e.g. off Linux, under 2 MiB or PERP_HUGEPAGES=0). Never changes the
   * contents. */
  adviseHuge(a: Float32Array): number;
  setThreads(n: number): number;
  threads(): number;
  /**
   * The default thread count (without PERP_THREADS): CPUs in the affinity mask, capped by the cgroup CPU quota under
   * `cgroupRoot` (default /sys/fs/cgroup: v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded up.
   */
  usableCpus(cgroupRoot?: string): number;
  cpu(): CpuInfo;
  setCpu(path: CpuPath): boolean;
  peakGflops(seconds?: number): number;
  /** GEMM cache blocking (values > 0 replace the current ones; nc < 0 restores the default, nc is rounded up to whole
   * 32-column panels; above kc 4096, nc 16384, mcp 512 or jg 1024 it throws) and how many GEMMs ran the cooperative
   * shared-B path: a benchmarking and test hook. */
  gemmBlocking(kc?: number, nc?: number, mcp?: number, jg?: number): GemmBlocking;
  /** op(B) (K x N) packed once for later `gemm` calls (their last argument), with k2 spare rows for a second product
   * along K: a frozen weight then skips the packing every GEMM does. A pack that does not match a call (another CPU
   * path or blocking) is ignored by it. The TS kernels return an empty array (and ignore it). */
  gemmPack(
    B: Float32Array | Uint16Array,
    K: number,
    N: number,
    transB: boolean,
    btype: ref.BType,
    k2: number,
  ): Float32Array;
}

export interface GemmBlocking {
  kc: number;
  nc: number;
  mcp: number;
  /** B panels per column group of the macro-kernel. */
  jg: number;
  coopGemms: number;
  /** GEMMs that used a pre-packed B (gemmPack). */
  packedGemms: number;
  /** GEMMs split by columns with a row-major A read in place (2+ threads; a dynamic tail up to 2 K blocks). */
  colsGemms: number;
}

const refKernels: Kernels = {
  ...ref,
  mmapFile(path: string): ArrayBuffer {
    const b = readFileSync(path);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  },
  allocF32: (n: number) => new Float32Array(n),
  alignment: () => 1,
  adviseHuge: () => 0,
  setThreads: () => 1,
  threads: () => 1,
  usableCpus: () => 1,
  cpu: () => ({ active: "scalar", best: "scalar", supported: ["scalar"], mr: 1, nr: 1 }),
  setCpu: (p: CpuPath) => p === "scalar",
  peakGflops: () => Number.NaN,
  gemmBlocking: () => ({ kc: 0, nc: 0, mcp: 0, jg: 0, coopGemms: 0, packedGemms: 0, colsGemms: 0 }),
  gemmPack: () => new Float32Array(0),
};

function findAddon(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, "build", "Release", "perp_native.node");
    try {
      readFileSync(p, { flag: "r" }).subarray(0, 0);
      return p;
    } catch {
      dir = dirname(dir);
    }
  }
  return null;
}

function load(): { kernels: Kernels; native: boolean; error?: string } {
  if (process.env.PERP_NATIVE === "0") return { kernels: refKernels, native: false };
  const path = findAddon();
  if (!path) return { kernels: refKernels, native: false, error: "build/Release/perp_native.node not found" };
  try {
    const req = createRequire(import.meta.url);
    return { kernels: req(path) as Kernels, native: true };
  } catch (e) {
    return { kernels: refKernels, native: false, error: String(e) };
  }
}

const loaded = load();
if (loaded.error && process.env.PERP_NATIVE !== "0") {
  process.emitWarning(`perp: native engine unavailable (${loaded.error}); using the slow TS kernels`);
}

/** The active kernels (native unless PERP_NATIVE=0 or the addon is missing). */
export const K: Kernels = loaded.kernels;
/** True when the C++ addon is in use. */
export const isNative: boolean = loaded.native;
/** The TS reference twins, for tests. */
export const refK: Kernels = refKernels;
