// BLIS loop nest (jc → pc → pack B → ic → pack A → jr → ir → micro-kernel), with the micro-kernel and tile sizes
// taken from the active ISA table. Edge tiles run the same micro-kernel on a padded copy, so every element of C is
// computed by the same sequence of FMAs whatever the tile position or thread split (bitwise thread-count invariance).
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <unistd.h>

#include "isa.h"
#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define PERP_SSE 1
#endif

namespace perp {

namespace {

long env_or(const char* k, long d) { const char* v = std::getenv(k); return v ? std::atol(v) : d; }
// A blocking from the environment, clamped to [lo, hi] (0 would divide by zero, the upper bounds are gemm.h's).
long env_in(const char* k, long d, long lo, long hi) {
  const long v = env_or(k, d);
  return v < lo ? lo : v > hi ? hi : v;
}
// K block: up to 1024 rows of B per pass, so C is read and written once per 1024 of K. Measured on Zen 5 (1 MB L2 per
// core) by alternating blockings product by product in one process (KC 384-2048, row blocks of 24-96 panels, groups
// of 1-8 B panels): KC 1024 with 48-panel row blocks and 3-panel groups (and its neighbours, KC 896-1280, 40-56
// panels, groups of 3-4) beat the earlier 512 / 24 / 8 by 1-2 points of peak on sgemm 4096^3 (medians of 10-15), the
// AVX2 path by 4; llama768 training steps and pruning blocks came out the same within noise (PEFT +1%).
long KC = env_in("PERP_KC", 1024, 8, kMaxKC);
// Column blocks are whole 32-column panels (the widest NR): a block narrower than a panel overflowed its pack buffer.
long whole_panels(long nc) { return (nc + 31) / 32 * 32; }
const long kDefaultNC = whole_panels(env_in("PERP_NC", 4096, 32, kMaxNC));
long NC = kDefaultNC;
// A rows per block: 576 (48 AVX-512 panels of 12 rows, 96 AVX2 panels of 6), so a 512-row product split over any
// number of threads is one row block per thread, and each B block is streamed once per thread (a pre-packed frozen
// weight comes from DRAM). For large M the A block (2.3 MB at KC 1024) does not stay in L2: each A micro-panel comes
// from L3 once per column group. The AVX2 path had 48 panels too (288 rows: two row blocks per 512-row product, each
// pre-packed B block read twice); 96, alternated with 48 step by step in one process on a Zen 3: PEFT fwd+bwd +6.6%,
// full +2%, sgemm 4096^3 the same. MC_PANELS > 0 (PERP_MCP, or set by gemm_blocking) overrides it.
constexpr long kRowBlock = 576;
long MC_PANELS = env_in("PERP_MCP", 0, 0, kMaxMCP);
// (In the main tile's panels: an ISA's narrow tile keeps as many panels, of its own height.)
long mc_panels() { return MC_PANELS > 0 ? MC_PANELS : kRowBlock / isa_active()->MR; }
// B panels per column group of macro(): the group (3 x 32 x KC floats = 384 KB) stays in L2 while every A micro-panel
// of the row block runs over it, instead of each A micro-panel streaming the whole B block from L3. The first A
// micro-panel brings the group in from L3 (measured: that call takes about twice as long), so a group should serve
// many A panels. The order of the FMAs per element is the same whatever the group size.
// The default scales with the L2 per core the machine reports: 3 panels per MiB, a group of 3/8 of Zen 5's 1 MiB,
// which measured best there (groups of 8: 2.7 points of peak less on sgemm 4096^3, alternated in one process). On an
// Intel Xeon with 2 MiB (Emerald Rapids, 2 threads of a 16-vCPU guest) groups of 8 beat 3 by 4 points (88.8 -> 92.9%
// of peak, three rounds alternated in one process); this rule gives 6 there, untried. An unknown size keeps 3.
long default_jg() {
#ifdef _SC_LEVEL2_CACHE_SIZE
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
  const long l2 = 0;
#endif
  if (l2 <= 0) return 3;
  const long jg = (3 * l2 + (1L << 19)) >> 20;  // 3 * L2 / 1 MiB, rounded
  return jg < 1 ? 1 : jg > 16 ? 16 : jg;
}
long JG = env_in("PERP_JG", default_jg(), 0, kMaxJG);
const bool kCoop = env_or("PERP_COOP", 1) != 0;
const bool kPackedAhead = env_or("PERP_AHEAD", 1) != 0;

thread_local Scratch t_pack_a, t_pack_b;

inline float load_b(const void* B, int btype, long idx) {
  if (btype == B_F32) return static_cast<const float*>(B)[idx];
  uint16_t h = static_cast<const uint16_t*>(B)[idx];
  return btype == B_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// Software prefetch distances of the packers (as in the AVX-512 one): source rows ahead for k-major copies, elements
// ahead along a row for transposing ones.
constexpr long kPackRowsAhead = 8, kPackColsAhead = 128;

inline void prefetch_span(const void* p, long bytes) {
#ifdef PERP_SSE
  for (long o = 0; o < bytes; o += 64) _mm_prefetch(static_cast<const char*>(p) + o, _MM_HINT_T0);
#else
  (void)p;
  (void)bytes;
#endif
}

// dst[k*ld + r] = src[r*lds + k] for r < rows, k < kc: a transposing copy, 4x4 SSE blocks where possible.
void pack_transpose(float* dst, long ld, const float* src, long lds, long rows, long kc) {
  long r = 0;
#ifdef PERP_SSE
  for (; r + 4 <= rows; r += 4) {
    const float *s0 = src + r * lds, *s1 = s0 + lds, *s2 = s1 + lds, *s3 = s2 + lds;
    long k = 0;
    for (; k + 4 <= kc; k += 4) {
      if ((k & 15) == 0)
        for (const float* s : {s0, s1, s2, s3}) prefetch_span(s + k + kPackColsAhead, 4);
      __m128 a = _mm_loadu_ps(s0 + k), b = _mm_loadu_ps(s1 + k), c = _mm_loadu_ps(s2 + k), e = _mm_loadu_ps(s3 + k);
      _MM_TRANSPOSE4_PS(a, b, c, e);
      _mm_storeu_ps(dst + k * ld + r, a);
      _mm_storeu_ps(dst + (k + 1) * ld + r, b);
      _mm_storeu_ps(dst + (k + 2) * ld + r, c);
      _mm_storeu_ps(dst + (k + 3) * ld + r, e);
    }
    for (; k < kc; ++k) {
      dst[k * ld + r] = s0[k];
      dst[k * ld + r + 1] = s1[k];
      dst[k * ld + r + 2] = s2[k];
      dst[k * ld + r + 3] = s3[k];
    }
  }
#endif
  for (; r < rows; ++r)
    for (long k = 0; k < kc; ++k) dst[k * ld + r] = src[r * lds + k];
}

// The portable packer (the ISA table's `pack` contract, see isa.h); SSE 4x4 transposes where possible.
void pack_generic(float* dst, int W, const void* src, int dtype, long ld, bool trans, long w, long kc, long ps) {
  const long np = (w + W - 1) / W;
  for (long p = 0; p < np; ++p) {
    float* d = dst + p * ps;
    const long c0 = p * W, wp = w - c0 < W ? w - c0 : W;
    if (dtype == B_F32 && trans) {
      pack_transpose(d, W, static_cast<const float*>(src) + c0 * ld, ld, wp, kc);
    } else if (dtype == B_F32) {
      const float* s = static_cast<const float*>(src) + c0;
      for (long k = 0; k < kc; ++k) {
        prefetch_span(s + (k + kPackRowsAhead) * ld, wp * sizeof(float));
        std::memcpy(d + k * W, s + k * ld, wp * sizeof(float));
      }
    } else {
      for (long k = 0; k < kc; ++k)
        for (long c = 0; c < wp; ++c) d[k * W + c] = load_b(src, dtype, trans ? (c0 + c) * ld + k : k * ld + c0 + c);
    }
    if (wp < W)
      for (long k = 0; k < kc; ++k)
        for (long c = wp; c < W; ++c) d[k * W + c] = 0.0f;
  }
}

inline pack_fn packer(const IsaKernels* isa) { return isa->pack ? isa->pack : pack_generic; }

// Register tile of one GEMM: the ISA's main MR x NR micro-kernel, or its narrow MR16 x 16 one when N <= 16 (LoRA
// ranks), which wastes no lanes on padding. Chosen from the shape alone, never from the thread count.
struct Shape {
  int MR, NR;
  micro_fn micro;
  pack_fn pk;
  micro_rows_fn rows;  // the micro-kernel over A's rows in place (nullptr: none for this tile)
};

Shape shape_for(const GemmArgs& g, const IsaKernels* isa) {
  // (An ISA whose main tile is 16 wide lists it as its narrow one too, for gemm_tout; it keeps its rows kernel.)
  if (g.N <= 16 && isa->micro16 && isa->micro16 != isa->micro)
    return {isa->MR16, 16, isa->micro16, packer(isa), nullptr};
  return {isa->MR, isa->NR, isa->micro, packer(isa), isa->micro_rowa};
}

// A row-major op(A) of up to kRowsMaxM rows is read in place by the rows micro-kernel, where the ISA has one: packing
// its MR-row panels cost 3-7% of a model-shape GEMM (A is read once per panel either way; its 12 rows stream through
// L1 like a packed panel). Only a second product's few columns and a ragged last panel are still packed. Taller
// products (sgemm 4096^3, calibration batches) pack as before: in place measured no faster there, and it makes a
// column split (every thread reading all of A) the natural one, which cost 4096^3 a point of peak.
constexpr long kRowsMaxM = 2048;
inline bool a_rows(const GemmArgs& g, const Shape& sh) { return sh.rows && !g.transA && g.M <= kRowsMaxM; }

// MR-row panels [q0, q1) of op(A) rows [i0, i0+mc), columns [p0, p0+kc), panel stride ps, at row offset k_off.
inline void pack_a_panels(float* dst, const GemmArgs& g, pack_fn pk, long i0, long mc, long q0, long q1, long p0,
                          long kc, int MR, long ps, bool second = false) {
  const long r0 = i0 + q0 * MR, rows = (q1 * MR < mc ? q1 * MR : mc) - q0 * MR;
  if (rows <= 0) return;
  const float* A = second ? g.A2 : g.A;
  const long lda = second ? g.lda2 : g.lda;
  const bool ta = second ? g.transA2 : g.transA;
  const float* src = ta ? A + p0 * lda + r0 : A + r0 * lda + p0;
  pk(dst + q0 * ps, MR, src, B_F32, lda, !ta, rows, kc, ps);
}

// NR-column panels [q0, q1) of op(B) columns [j0, j0+nc), rows [p0, p0+kc), panel stride ps.
inline void pack_b_panels(float* dst, const GemmArgs& g, pack_fn pk, long j0, long nc, long q0, long q1, long p0,
                          long kc, int NR, long ps, bool second = false) {
  const long c0 = j0 + q0 * NR, cols = (q1 * NR < nc ? q1 * NR : nc) - q0 * NR;
  if (cols <= 0) return;
  if (second) {
    const float* src = g.transB2 ? g.B2 + c0 * g.ldb2 + p0 : g.B2 + p0 * g.ldb2 + c0;
    pk(dst + q0 * ps, NR, src, B_F32, g.ldb2, g.transB2, cols, kc, ps);
    return;
  }
  const long off = g.transB ? c0 * g.ldb + p0 : p0 * g.ldb + c0;
  const void* src = g.btype == B_F32 ? static_cast<const void*>(static_cast<const float*>(g.B) + off)
                                     : static_cast<const void*>(static_cast<const uint16_t*>(g.B) + off);
  pk(dst + q0 * ps, NR, src, g.btype, g.ldb, g.transB, cols, kc, ps);
}

void scale_c(const GemmArgs& g) {
  for (long i = 0; i < g.M; ++i) {
    float* r = g.C + i * g.ldc;
    for (long j = 0; j < g.N; ++j) r[j] = g.beta == 0.0f ? 0.0f : g.beta * r[j];
  }
}

// Balanced K blocks (e.g. K=512 -> 2 x 256 rather than 384 + 128); every element sees the same blocks whatever
// the thread count, so results are bitwise thread-count invariant.
long k_block(long K) {
  const long kblocks = (K + KC - 1) / KC;
  const long kcb = ((K + kblocks - 1) / kblocks + 7) / 8 * 8;
  return K < kcb ? K : kcb;
}

// Where the micro-kernel reads op(A) and op(B) for one (jc, pc, ic) block: packed panels, or in place when the
// operand is already k-major (A^T: element (i, k) at A[k*lda + i]; row-major B: (k, j) at B[k*ldb + j]) and
// packing would not pay: a contiguous layout (ld <= 2 panel widths) or a panel reused at most twice. Edge panels
// (fewer than MR rows / NR columns) are always packed (zero padding; reading past them could leave the buffer).
// a_rows: A row-major, read in place by the rows micro-kernel (see a_rows()).
struct Operands {
  bool a_direct, b_direct, a_rows;
};

Operands choose_operands(const GemmArgs& g, const Shape& sh, long mc, long nc) {
  const bool rows = a_rows(g, sh);
  if (g.K2 > 0) return {false, false, rows};  // the last K block of B is a packed concatenation with the second product
  const long MR = sh.MR, NR = sh.NR;
  const long a_reuse = (nc + NR - 1) / NR, b_reuse = (mc + MR - 1) / MR;
  return {g.transA && (g.lda <= 2 * MR || a_reuse <= 2),
          !g.transB && g.btype == B_F32 && (g.ldb <= 2 * NR || b_reuse <= 2), rows};
}

// A span of memory to pull toward the caches a little at a time, between micro-kernel calls: the next block of a
// pre-packed B, which would otherwise come from DRAM only when the micro-kernel first reads it.
struct Ahead {
  const char* p = nullptr;
  const char* end = nullptr;
  long per_call = 0;  // cache lines per micro-kernel call
  void step() {
#ifdef PERP_SSE
    for (long i = 0; i < per_call && p < end; ++i, p += 64) _mm_prefetch(p, _MM_HINT_T1);
#endif
  }
};

// C[ic+ir.., jc+jr..] over the block: ir outer, jr inner, so the A micro-panel (MR x kc) stays in L1 while B
// micro-panels stream from L2 (BLIS's assignment, with our row-major roles swapped). Edge tiles go through a padded
// copy (same FMAs as a full tile). kc counts the second product's k2 rows too.
void macro(const GemmArgs& g, const Shape& sh, Operands op, const float* pa, const float* pb, long ic, long mc, long jc,
           long nc, long pc, long kc, long k2, float beta, Ahead* ahead = nullptr) {
  const int MR = sh.MR, NR = sh.NR;
  alignas(64) float tile[32 * 32];
  for (long ir = 0; ir < mc; ir += MR) {
    const long mr = mc - ir < MR ? mc - ir : MR;
    const bool ad = op.a_direct && mr == MR, rows = op.a_rows && mr == MR;
    const float* ap = ad ? g.A + pc * g.lda + ic + ir : rows ? g.A + (ic + ir) * g.lda + pc : pa + ir * kc;
    const long sa = ad || rows ? g.lda : MR;
    const float* a2 = pa + ir * kc + (kc - k2) * MR;  // with rows: the packed second product
    for (long jr = 0; jr < nc; jr += NR) {
      const long nr = nc - jr < NR ? nc - jr : NR;
      const bool bd = op.b_direct && nr == NR;
      const float* bp = bd ? static_cast<const float*>(g.B) + pc * g.ldb + jc + jr : pb + jr * kc;
      const long sb = bd ? g.ldb : NR;
      float* c = g.C + (ic + ir) * g.ldc + jc + jr;
      if (ahead) ahead->step();
      {  // the C tile of the next call (next panel along the row, or the first of the next row), pulled in meanwhile
        const long nj = jr + NR < nc ? jr + NR : 0, ni = jr + NR < nc ? ir : ir + MR;
        if (ni < mc) {
          const float* cn = g.C + (ic + ni) * g.ldc + jc + nj;
          const long rows = mc - ni < MR ? mc - ni : MR;
          for (long r = 0; r < rows; ++r) {
            prefetch_span(cn + r * g.ldc, 4);
            prefetch_span(cn + r * g.ldc + NR - 1, 4);
          }
        }
      }
      const auto run = [&](float* cc, long ldc) {
        if (rows) sh.rows(kc - k2, ap, sa, k2, a2, bp, sb, cc, ldc, g.alpha, beta);
        else sh.micro(kc, ap, sa, bp, sb, cc, ldc, g.alpha, beta);
      };
      if (mr == MR && nr == NR) {
        run(c, g.ldc);
      } else {
        if (beta != 0.0f)
          for (long r = 0; r < mr; ++r) std::memcpy(tile + r * NR, c + r * g.ldc, nr * sizeof(float));
        run(tile, NR);
        for (long r = 0; r < mr; ++r) std::memcpy(c + r * g.ldc, tile + r * NR, nr * sizeof(float));
      }
    }
  }
}

// Every row of g against one packed (or direct) kc x nc block of B: MC-row blocks of A packed in turn, then macro.
void row_blocks(const GemmArgs& g, const Shape& sh, Operands op, float* pa, const float* pb, long jc, long nc, long pc,
                long kc, long k2, float beta, Ahead* ahead = nullptr) {
  const int MR = sh.MR;
  const long kt = kc + k2;
  // Row blocks of equal size (whole panels, at most mc_panels()): 2048 rows are 4 x 43 panels, not 3 x 48 + 27, whose
  // short last block reused each B group for only 27 A panels (sgemm 4096^3, alternated in one process: 90.3 -> 91.2%).
  const long mcp = mc_panels(), panels = (g.M + MR - 1) / MR, nblk = (panels + mcp - 1) / mcp;
  const long MC = MR * ((panels + nblk - 1) / nblk);
  for (long ic = 0; ic < g.M; ic += MC) {
    const long mc = g.M - ic < MC ? g.M - ic : MC;
    const long mpan = (mc + MR - 1) / MR;
    // Panels of A read in place (k-major A^T, or rows) are packed only where ragged; a second product always is.
    const long q0 = op.a_direct || op.a_rows ? (mc % MR ? mpan - 1 : mpan) : 0;
    if (kc > 0) pack_a_panels(pa, g, sh.pk, ic, mc, q0, mpan, pc, kc, MR, MR * kt);
    if (k2 > 0) pack_a_panels(pa + kc * MR, g, sh.pk, ic, mc, 0, mpan, 0, k2, MR, MR * kt, true);
    const long G = JG > 0 ? JG * sh.NR : nc;
    for (long jg = 0; jg < nc; jg += G)  // column groups of B panels (see JG)
      macro(g, sh, op, pa, pb + jg * kt, ic, mc, jc + jg, nc - jg < G ? nc - jg : G, pc, kt, k2, beta, ahead);
  }
}

// Pre-packed B: a 16-float header, then for each K block (rows pc.., kc of them; the last one with k2 spare rows
// appended) every NR-column panel of op(B), k-major, zero-padded to NR columns.
constexpr long kPackHeader = 16;
constexpr int32_t kPackMagic = 0x5045524b;  // "PERK"

struct PackedLayout {
  long kc_max, k2, np, NR;
  // Offset (floats, from the data start) of the K block starting at row pc, and its panel stride.
  long block_offset(long pc, long) const { return (pc / kc_max) * np * NR * kc_max; }  // earlier blocks are full
  long stride(long pc, long K) const {
    const long kc = K - pc < kc_max ? K - pc : kc_max;
    return NR * (kc + (pc + kc >= K ? k2 : 0));
  }
};

// The layout a pre-packed B must have for g on this ISA, or nullptr data when g.packed does not match it. The data
// returned starts at the call's first column (packed_n0); lay->np counts the panels of all the packed columns.
const float* packed_data(const GemmArgs& g, const Shape& sh, PackedLayout* lay) {
  if (!g.packed || g.packed_len < kPackHeader || g.K <= 0) return nullptr;
  const long ncols = g.packed_ncols > 0 ? g.packed_ncols : g.N;
  if (g.packed_n0 < 0 || g.packed_n0 % sh.NR || g.packed_n0 + g.N > ncols) return nullptr;
  const int32_t* h = reinterpret_cast<const int32_t*>(g.packed);
  const long kc_max = k_block(g.K), np = (ncols + sh.NR - 1) / sh.NR, K2 = g.K2 > 0 ? g.K2 : 0;
  if (h[0] != kPackMagic || h[1] != sh.NR || h[2] != kc_max || h[3] != g.K || h[4] != ncols || h[5] != K2 ||
      h[6] != isa_active_id())
    return nullptr;
  if (g.packed_len < kPackHeader + np * sh.NR * (g.K + K2)) return nullptr;
  *lay = {kc_max, K2, np, sh.NR};
  return g.packed + kPackHeader;
}

// The whole loop nest for one block of C on one thread; `g` may describe a sub-matrix.
void gemm_block(const GemmArgs& g, const Shape& sh) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 && g.K2 <= 0) {
    scale_c(g);
    return;
  }
  const int MR = sh.MR, NR = sh.NR;
  const pack_fn pk = sh.pk;
  const long MC = MR * mc_panels();
  const long nc_max = g.N < NC ? ((g.N + NR - 1) / NR) * NR : NC;
  const long kc_max = g.K > 0 ? k_block(g.K) : 0;
  const long K2 = g.K2 > 0 ? g.K2 : 0;
  PackedLayout lay;
  const float* pre = packed_data(g, sh, &lay);
  float* pb = pre ? nullptr : t_pack_b.get(nc_max * (kc_max + K2));
  float* pa = t_pack_a.get(MC * (kc_max + K2));
  if (pre) {  // every panel is ready (second-product rows included): nothing to pack
    const long ncp = NC >= NR ? NC / NR * NR : NR;  // column blocks of whole panels (B blocks stay cache-sized)
    // Block (jc, pc): where it starts; `len` gets how many floats it spans.
    auto block = [&](long jc, long pc, long* len) {
      const long nc = g.N - jc < ncp ? g.N - jc : ncp;
      if (len) *len = ((nc + NR - 1) / NR) * lay.stride(pc, g.K);
      return pre + lay.block_offset(pc, g.K) + ((g.packed_n0 + jc) / NR) * lay.stride(pc, g.K);
    };
    for (long jc = 0; jc < g.N; jc += ncp) {
      const long nc = g.N - jc < ncp ? g.N - jc : ncp;
      Operands op = choose_operands(g, sh, g.M < MC ? g.M : MC, nc);
      op.b_direct = false;
      for (long pc = 0; pc < g.K; pc += kc_max) {
        const long kc = g.K - pc < kc_max ? g.K - pc : kc_max;
        long next_len = 0;
        const float* blk = block(jc, pc, nullptr);
        const float* next = nullptr;  // the block after this one, pulled toward the caches during this one
        if (pc + kc_max < g.K) next = block(jc, pc + kc_max, &next_len);
        else if (jc + ncp < g.N) next = block(jc + ncp, 0, &next_len);
        Ahead ahead;
        if (next && kPackedAhead) {
          const long calls = ((g.M + MR - 1) / MR) * ((nc + NR - 1) / NR);
          ahead.p = reinterpret_cast<const char*>(next);
          ahead.end = ahead.p + next_len * sizeof(float);
          ahead.per_call = (next_len * (long)sizeof(float) / 64 + calls - 1) / calls;
        }
        row_blocks(g, sh, op, pa, blk, jc, nc, pc, kc, pc + kc >= g.K ? K2 : 0, pc == 0 ? g.beta : 1.0f, &ahead);
      }
    }
    return;
  }
  for (long jc = 0; jc < g.N; jc += NC) {
    const long nc = g.N - jc < NC ? g.N - jc : NC;
    const long npan = (nc + NR - 1) / NR;
    const Operands op = choose_operands(g, sh, g.M < MC ? g.M : MC, nc);
    // K blocks; the second product (K2 rows) joins the last one (or is the only one when K == 0).
    for (long pc = 0; pc < g.K || (pc == 0 && K2 > 0); pc += kc_max) {
      const long kc = g.K - pc < kc_max ? g.K - pc : kc_max;
      const bool last = pc + kc >= g.K;
      const long k2 = last ? K2 : 0, kt = kc + k2;
      const float beta = pc == 0 ? g.beta : 1.0f;
      if (!op.b_direct) {
        if (kc > 0) pack_b_panels(pb, g, pk, jc, nc, 0, npan, pc, kc, NR, NR * kt);
        if (k2 > 0) pack_b_panels(pb + kc * NR, g, pk, jc, nc, 0, npan, 0, k2, NR, NR * kt, true);
      } else if (nc % NR) {
        pack_b_panels(pb, g, pk, jc, nc, npan - 1, npan, pc, kc, NR, NR * kt);
      }
      row_blocks(g, sh, op, pa, pb, jc, nc, pc, kc, k2, beta);
      if (kc_max == 0) break;
    }
  }
}

thread_local Scratch t_tout;

std::atomic<long> g_packed_count{0};

// True when g carries a pre-packed B that matches it; its spare rows then get the second product's rows (before any
// thread reads them).
bool prepare_packed(const GemmArgs& g, const Shape& sh) {
  PackedLayout lay;
  const float* data = packed_data(g, sh, &lay);
  if (!data) return false;
  if (lay.k2 > 0) {
    const long pc = ((g.K - 1) / lay.kc_max) * lay.kc_max, kc = g.K - pc;
    float* last = g.packed + kPackHeader + lay.block_offset(pc, g.K);  // the last K block, its spare rows after kc
    pack_b_panels(last + kc * lay.NR, g, sh.pk, 0, g.N, 0, lay.np, 0, lay.k2, lay.NR, lay.stride(pc, g.K), true);
  }
  ++g_packed_count;
  return true;
}

}  // namespace

void gemm_st(const GemmArgs& g) {
  const Shape sh = shape_for(g, isa_active());
  prepare_packed(g, sh);
  gemm_block(g, sh);
}

void pack_panels(float* dst, int W, const float* src, long ld, bool trans, long w, long kc, long ps) {
  if (w > 0 && kc > 0) packer(isa_active())(dst, W, src, B_F32, ld, trans, w, kc, ps);
}

void gemm_blocking(long* kc, long* nc, long* mcp, long* jg) {
  if (*kc > 0) KC = *kc;
  if (*nc != 0) NC = *nc < 0 ? kDefaultNC : whole_panels(*nc);
  if (*mcp > 0) MC_PANELS = *mcp;
  if (*jg > 0) JG = *jg;
  *kc = KC;
  *nc = NC;
  *mcp = mc_panels();
  *jg = JG;
}

// Multi-threaded: each thread runs the whole loop nest on its own block of C (columns when A's rows are read in place,
// else rows when M >= N, else columns), packing what it needs itself. One join at the end and no barriers in between:
// on a shared VM a preempted core then delays only its own block (measured: a cooperative pack-then-compute scheme
// with shared panels and two barriers per block was 5-10% slower here; gemm_coop is the exception, for products
// where every thread would pack a large operand in full).
// Skinny N (e.g. the LoRA down-projection u = x A^T, N = r): the inner-product kernel reads A and B^T rows in place,
// so the large A (M x K activations) is never packed. B in (K x N) layout is transposed into a small buffer first.
// Chosen by shape only (never by thread count), so results stay bitwise thread-count invariant.
bool gemm_dot(const GemmArgs& g, const IsaKernels* isa) {
  if (g.K2 > 0 || !isa->dot || g.transA || g.btype != B_F32 || g.N > 32 || g.K < 64 || g.M < 64) return false;
  const float* bt = static_cast<const float*>(g.B);
  long ldb = g.ldb;
  if (!g.transB) {  // Bᵀ (N x K) via the ISA's transposing packer: one "panel" K wide, N deep
    float* t = t_pack_b.get(g.N * g.K);
    packer(isa)(t, (int)g.K, g.B, B_F32, g.ldb, true, g.K, g.N, g.N * g.K);
    bt = t;
    ldb = g.K;
  }
  auto rows = [&](long b, long e) {
    isa->dot(e - b, g.N, g.K, g.A + b * g.lda, g.lda, bt, ldb, g.C + b * g.ldc, g.ldc, g.alpha, g.beta);
  };
  if (pool_threads() == 1 || pool_nested()) {
    rows(0, g.M);
  } else {
    pool_run([&](int ith, int n) {
      long b, e;
      pool_split(g.M, ith, n, 4, &b, &e);
      if (e > b) rows(b, e);
    });
  }
  return true;
}

// Skinny M with A^T (the LoRA gradient dA = gᵀ x, M = r): C^T = op(B)^T op(A)^T has N' = M <= 16, which the narrow
// micro-kernel computes with both operands read in place (nothing packed); C is then written from the transpose.
bool gemm_tout(const GemmArgs& g, const IsaKernels* isa) {
  if (!isa->micro16 || g.K2 > 0 || !g.transA || g.transB || g.btype != B_F32 || g.M > 16 || g.N < 64 || g.K < 16)
    return false;
  float* t = t_tout.get(g.N * g.M);
  GemmArgs tg = g;
  tg.C = t;
  tg.ldc = g.M;
  tg.A = static_cast<const float*>(g.B);
  tg.lda = g.ldb;
  tg.B = g.A;
  tg.ldb = g.lda;
  tg.M = g.N;
  tg.N = g.M;
  tg.beta = 0.0f;
  gemm(tg);
  for (long i = 0; i < g.M; ++i) {
    float* c = g.C + i * g.ldc;
    if (g.beta == 0.0f)
      for (long j = 0; j < g.N; ++j) c[j] = t[j * g.M + i];
    else
      for (long j = 0; j < g.N; ++j) c[j] = std::fma(g.beta, c[j], t[j * g.M + i]);
  }
  return true;
}

// Per-thread GEMM throughput, an exponential moving average over the GEMMs large enough to time well. The split of
// C follows it: measured on this VM, one vCPU ran ~7% slower than the other for long stretches, and an even split
// left the faster one waiting at every join. Any split gives the same bits (see the file comment), so adapting it
// keeps results deterministic.
constexpr int kMaxSpeedThreads = 64;
double g_speed[kMaxSpeedThreads];
int g_speed_n = 0;

// Boundaries of part ith when `units` are shared in proportion to g_speed.
void weighted_split(long units, int ith, int nth, long* ub, long* ue) {
  double total = 0, before = 0;
  for (int i = 0; i < nth; ++i) total += g_speed[i];
  for (int i = 0; i < ith; ++i) before += g_speed[i];
  *ub = (long)(units * before / total + 0.5);
  *ue = ith == nth - 1 ? units : (long)(units * (before + g_speed[ith]) / total + 0.5);
}

// Rows [b, e) of g as a GEMM of their own.
GemmArgs row_view(const GemmArgs& g, long b, long e) {
  GemmArgs s = g;
  s.M = e - b;
  s.C = g.C + b * g.ldc;
  s.A = g.transA ? g.A + b : g.A + b * g.lda;
  if (g.K2 > 0) s.A2 = g.transA2 ? g.A2 + b : g.A2 + b * g.lda2;
  return s;
}

// Columns [b, e) of g as a GEMM of their own (b a multiple of NR where B is pre-packed).
GemmArgs col_view(const GemmArgs& g, long b, long e) {
  GemmArgs s = g;
  s.N = e - b;
  s.C = g.C + b;
  const long off = g.transB ? b * g.ldb : b;
  s.B = g.btype == B_F32 ? static_cast<const void*>(static_cast<const float*>(g.B) + off)
                         : static_cast<const void*>(static_cast<const uint16_t*>(g.B) + off);
  if (g.K2 > 0) s.B2 = g.transB2 ? g.B2 + b * g.ldb2 : g.B2 + b;
  if (g.packed) {  // the same pre-packed B, from column b on
    s.packed_n0 = g.packed_n0 + b;
    s.packed_ncols = g.packed_ncols > 0 ? g.packed_ncols : g.N;
  }
  return s;
}

// Spin barrier for the threads of one pool job (waits are short: one B block's packing).
struct SpinBarrier {
  std::atomic<int> count{0};
  std::atomic<unsigned> gen{0};
  void wait(int n) {
    const unsigned g0 = gen.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      gen.fetch_add(1, std::memory_order_release);
      return;
    }
    // Spin; yield now and then, so that with more threads than cores the one being waited for gets to run.
    for (unsigned spins = 1; gen.load(std::memory_order_acquire) == g0; ++spins) {
      if ((spins & 1023) == 0) std::this_thread::yield();
#ifdef PERP_SSE
      _mm_pause();
#endif
    }
  }
};

std::atomic<long> g_cols_count{0};
Scratch g_coop_b;  // shared B blocks of the cooperative path (only the main thread starts GEMMs)
long g_coop_count = 0;

// Large GEMMs on several threads: C split by rows, each kc x nc block of B packed once by all threads together (each
// its share of the panels) into a shared double buffer, one barrier per block. Each thread would otherwise pack the
// whole of B itself, and keep its own copy in the shared L3. Returns false when B is read in place (nothing to
// share). `part(ith, n, units, &ub, &ue)` splits the MR-row panels; rate[ith] gets rows per second.
template <class Split>
bool gemm_coop(const GemmArgs& g, const Shape& sh, Split part, double* rate) {
  const int MR = sh.MR, NR = sh.NR;
  const long MC = MR * mc_panels();
  const Operands op = choose_operands(g, sh, g.M < MC ? g.M : MC, g.N < NC ? g.N : NC);
  if (op.b_direct || (g.K <= 0 && g.K2 <= 0)) return false;
  const long kc_max = g.K > 0 ? k_block(g.K) : 0, K2 = g.K2 > 0 ? g.K2 : 0;
  const long nc_max = g.N < NC ? ((g.N + NR - 1) / NR) * NR : NC;
  const long bsz = nc_max * (kc_max + K2);
  float* shared = g_coop_b.get(2 * bsz);
  const long units = (g.M + MR - 1) / MR;
  SpinBarrier bar;
  ++g_coop_count;
  pool_run([&](int ith, int n) {
    long ub, ue;
    part(ith, n, units, &ub, &ue);
    const long b = ub * MR < g.M ? ub * MR : g.M, e = ue * MR < g.M ? ue * MR : g.M;
    const GemmArgs s = row_view(g, b, e);
    float* pa = t_pack_a.get(MC * (kc_max + K2));
    const auto t0 = std::chrono::steady_clock::now();
    int blk = 0;
    for (long jc = 0; jc < g.N; jc += NC) {
      const long nc = g.N - jc < NC ? g.N - jc : NC;
      const long npan = (nc + NR - 1) / NR, q0 = npan * ith / n, q1 = npan * (ith + 1) / n;
      for (long pc = 0; pc < g.K || (pc == 0 && K2 > 0); pc += kc_max) {
        const long kc = g.K - pc < kc_max ? g.K - pc : kc_max;
        const long k2 = pc + kc >= g.K ? K2 : 0, kt = kc + k2;
        float* pb = shared + (blk++ & 1) * bsz;
        // Double buffering: a thread packing block t has passed barrier t-1, which every thread reaches only after
        // computing on block t-2, the previous user of this buffer.
        if (kc > 0) pack_b_panels(pb, g, sh.pk, jc, nc, q0, q1, pc, kc, NR, NR * kt);
        if (k2 > 0) pack_b_panels(pb + kc * NR, g, sh.pk, jc, nc, q0, q1, 0, k2, NR, NR * kt, true);
        bar.wait(n);
        if (s.M > 0) row_blocks(s, sh, op, pa, pb, jc, nc, pc, kc, k2, pc == 0 ? g.beta : 1.0f);
        if (kc_max == 0) break;
      }
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (ith < kMaxSpeedThreads) rate[ith] = s.M > 0 ? (double)s.M / (dt > 1e-9 ? dt : 1e-9) : 0.0;
  });
  return true;
}

// Each thread runs the whole loop nest on its own contiguous block of C: rows (split_m) or columns.
template <class Split>
void run_split(const GemmArgs& g, const Shape& sh, Split part, double* rate, bool split_m) {
  const long dim = split_m ? g.M : g.N, align = split_m ? sh.MR : sh.NR, units = (dim + align - 1) / align;
  pool_run([&](int ith, int n) {
    long ub, ue;
    part(ith, n, units, &ub, &ue);
    const long b = ub * align < dim ? ub * align : dim, e = ue * align < dim ? ue * align : dim;
    const GemmArgs s = split_m ? row_view(g, b, e) : col_view(g, b, e);
    if (e <= b) return;
    const auto t0 = std::chrono::steady_clock::now();
    gemm_block(s, sh);
    if (ith < kMaxSpeedThreads) {
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rate[ith] = (double)(e - b) / (dt > 1e-9 ? dt : 1e-9);
    }
  });
}

// Columns split with A's rows read in place (see gemm()): each thread takes its share of the first column panels
// (in proportion to its measured speed), then the last quarter are handed out a few at a time to whichever thread is
// free. Two vCPUs of this VM run at speeds that differ call by call, by 5-10% on a 4 ms product; with a static split
// the faster one waited out the difference at every join. A panel on its own streams A's rows once per K block, as a
// group of panels does, so the tail costs no extra traffic; with many K blocks (A too large to stay cached) it would,
// and those products split statically.
template <class Split>
void run_cols(const GemmArgs& g, const Shape& sh, Split part, double* rate) {
  const long NR = sh.NR, P = (g.N + NR - 1) / NR;
  const int nth = pool_threads();
  const long tail = g.K <= 2 * KC ? std::min(P - nth, std::max<long>(nth, P / 4)) : 0, head = P - tail;
  const long chunk = std::max<long>(1, P / 64);
  std::atomic<long> next{head};
  ++g_cols_count;
  pool_run([&](int ith, int n) {
    long ub, ue;
    part(ith, n, head, &ub, &ue);
    const auto t0 = std::chrono::steady_clock::now();
    long done = 0;
    const auto run = [&](long p0, long p1) {
      const long b = p0 * NR, e = std::min(g.N, p1 * NR);
      if (e > b) gemm_block(col_view(g, b, e), sh);
      done += e - b;
    };
    run(ub, ue);
    for (long p; (p = next.fetch_add(chunk, std::memory_order_relaxed)) < P;) run(p, std::min(P, p + chunk));
    if (ith < kMaxSpeedThreads) {
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rate[ith] = (double)done / (dt > 1e-9 ? dt : 1e-9);
    }
  });
}

// Update the relative speeds (normalised to mean 1; ignore the update when a thread had no work).
void update_speeds(const double* rate, int nth) {
  double mean = 0;
  int k = 0;
  for (int i = 0; i < nth; ++i)
    if (rate[i] > 0) {
      mean += rate[i];
      ++k;
    }
  if (k < nth) return;
  mean /= k;
  for (int i = 0; i < nth; ++i) g_speed[i] = 0.7 * g_speed[i] + 0.3 * (rate[i] / mean);
}

void gemm(const GemmArgs& g) {
  const IsaKernels* isa = isa_active();
  if (gemm_tout(g, isa) || gemm_dot(g, isa)) return;
  const Shape sh = shape_for(g, isa);
  const bool pre = prepare_packed(g, sh);
  const int nth = pool_threads();
  const double flops = 2.0 * g.M * g.N * (g.K + (g.K2 > 0 ? g.K2 : 0));
  if (nth == 1 || flops < 2e5 || pool_nested()) {
    gemm_block(g, sh);
    return;
  }
  const bool adaptive = nth <= kMaxSpeedThreads && flops >= 5e7;
  if (g_speed_n != nth) {
    for (int i = 0; i < kMaxSpeedThreads; ++i) g_speed[i] = 1.0;
    g_speed_n = nth;
  }
  double rate[kMaxSpeedThreads] = {};
  const auto part = [&](int ith, int n, long units, long* ub, long* ue) {
    if (adaptive) weighted_split(units, ith, n, ub, ue);
    else pool_split(units, ith, n, 1, ub, ue);
  };
  // With A's rows read in place, a column split has no thread pack anything twice (each packs only its own B panels,
  // and a second product's few A columns) and no barriers; its column panels also divide more evenly than the 43 row
  // panels of a 512-row product (22 + 21: one thread idled 1/22 of the time), and a pre-packed B splits the same way.
  // Measured on llama768 steps against packed A and the old splits: one model at a time, full fwd+bwd +1.5-3% and
  // PEFT +4-5%; in the bench (both models in memory, old and new processes alternated) +1-2% each.
  const bool cols = a_rows(g, sh) && g.N >= 2L * nth * sh.NR;
  // Otherwise rows when M >= N, and always for a pre-packed B not split by columns above; shared B blocks pay when
  // the operand a row or column split would have every thread pack in full (B when splitting rows, A when splitting
  // columns) is at least what each thread packs of the other.
  const bool split_m = !cols && (pre || g.M >= g.N);
  const double a_elems = (double)g.M * g.K, b_elems = (double)g.K * g.N;
  const bool dup_heavy = split_m ? b_elems >= a_elems / nth : a_elems >= b_elems / nth;
  // Barriers want every thread on a core of its own: not with more threads than CPUs.
  static const int cpus = usable_cpus();
  const bool coop = !cols && !pre && kCoop && adaptive && dup_heavy && (cpus <= 0 || nth <= cpus) &&
                    g.M >= 4L * nth * sh.MR && gemm_coop(g, sh, part, rate);
  if (cols) run_cols(g, sh, part, rate);
  else if (!coop) run_split(g, sh, part, rate, split_m);
  if (adaptive) update_speeds(rate, nth);
}

long gemm_coop_count() { return g_coop_count; }
long gemm_cols_count() { return g_cols_count.load(); }
long gemm_packed_count() { return g_packed_count; }

long gemm_pack_size(long K, long N, long k2) {
  const int NR = isa_active()->NR;
  return kPackHeader + ((N + NR - 1) / NR) * NR * (K + (k2 > 0 ? k2 : 0));
}

void gemm_pack_b(float* dst, const void* B, int btype, long ldb, bool transB, long K, long N, long k2) {
  const IsaKernels* isa = isa_active();
  const Shape sh{isa->MR, isa->NR, isa->micro, packer(isa), isa->micro_rowa};
  k2 = k2 > 0 ? k2 : 0;
  const long kc_max = K > 0 ? k_block(K) : 0, np = (N + sh.NR - 1) / sh.NR;
  int32_t* h = reinterpret_cast<int32_t*>(dst);
  for (long i = 0; i < kPackHeader; ++i) h[i] = 0;
  const int32_t hv[7] = {kPackMagic, sh.NR, (int32_t)kc_max, (int32_t)K, (int32_t)N, (int32_t)k2, isa_active_id()};
  for (int i = 0; i < 7; ++i) h[i] = hv[i];
  GemmArgs g{};
  g.B = B;
  g.btype = btype;
  g.ldb = ldb;
  g.transB = transB;
  g.K = K;
  g.N = N;
  const PackedLayout lay{kc_max, k2, np, sh.NR};
  float* data = dst + kPackHeader;
  for (long pc = 0; pc < K; pc += kc_max) {
    const long kc = K - pc < kc_max ? K - pc : kc_max, ps = lay.stride(pc, K);
    float* blk = data + lay.block_offset(pc, K);
    pack_b_panels(blk, g, sh.pk, 0, N, 0, np, pc, kc, sh.NR, ps);
    if (pc + kc >= K && k2 > 0)  // spare rows: zero until a call writes its second product there
      for (long p = 0; p < np; ++p) std::memset(blk + p * ps + kc * sh.NR, 0, k2 * sh.NR * sizeof(float));
  }
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace perp
