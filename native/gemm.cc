// BLIS loop nest (jc → pc → pack B → ic → pack A → jr → ir → micro-kernel), with the micro-kernel and tile sizes
// taken from the active ISA table. Edge tiles run the same micro-kernel on a padded copy, so every element of C is
// computed by the same sequence of FMAs whatever the tile position or thread split (bitwise thread-count invariance).
#include "gemm.h"

#include <cstdlib>
#include <cstring>

#include "isa.h"
#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define PERP_SSE 1
#endif

namespace perp {

namespace {

long env_or(const char* k, long d) { const char* v = std::getenv(k); return v ? std::atol(v) : d; }
long KC = env_or("PERP_KC", 384);
long NC = env_or("PERP_NC", 1024);
long MC_PANELS = env_or("PERP_MCP", 16);

struct Scratch {
  float* buf = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(buf); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(buf);
      size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      buf = static_cast<float*>(std::aligned_alloc(64, bytes));
      cap = n;
    }
    return buf;
  }
};

thread_local Scratch t_pack_a, t_pack_b;

inline float load_b(const void* B, int btype, long idx) {
  if (btype == B_F32) return static_cast<const float*>(B)[idx];
  uint16_t h = static_cast<const uint16_t*>(B)[idx];
  return btype == B_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// dst[k*ld + r] = src[r*lds + k] for r < rows, k < kc: a transposing copy, 4x4 SSE blocks where possible.
void pack_transpose(float* dst, long ld, const float* src, long lds, long rows, long kc) {
  long r = 0;
#ifdef PERP_SSE
  for (; r + 4 <= rows; r += 4) {
    const float *s0 = src + r * lds, *s1 = s0 + lds, *s2 = s1 + lds, *s3 = s2 + lds;
    long k = 0;
    for (; k + 4 <= kc; k += 4) {
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
void pack_generic(float* dst, int W, const void* src, int dtype, long ld, bool trans, long w, long kc) {
  const long np = (w + W - 1) / W;
  for (long p = 0; p < np; ++p) {
    float* d = dst + p * W * kc;
    const long c0 = p * W, wp = w - c0 < W ? w - c0 : W;
    if (dtype == B_F32 && trans) {
      pack_transpose(d, W, static_cast<const float*>(src) + c0 * ld, ld, wp, kc);
    } else if (dtype == B_F32) {
      const float* s = static_cast<const float*>(src) + c0;
      for (long k = 0; k < kc; ++k) std::memcpy(d + k * W, s + k * ld, wp * sizeof(float));
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

// MR-row panels [q0, q1) of op(A) rows [i0, i0+mc), columns [p0, p0+kc).
inline void pack_a_panels(float* dst, const GemmArgs& g, pack_fn pk, long i0, long mc, long q0, long q1, long p0,
                          long kc, int MR) {
  const long r0 = i0 + q0 * MR, rows = (q1 * MR < mc ? q1 * MR : mc) - q0 * MR;
  if (rows <= 0) return;
  const float* src = g.transA ? g.A + p0 * g.lda + r0 : g.A + r0 * g.lda + p0;
  pk(dst + q0 * MR * kc, MR, src, B_F32, g.lda, !g.transA, rows, kc);
}

// NR-column panels [q0, q1) of op(B) columns [j0, j0+nc), rows [p0, p0+kc).
inline void pack_b_panels(float* dst, const GemmArgs& g, pack_fn pk, long j0, long nc, long q0, long q1, long p0,
                          long kc, int NR) {
  const long c0 = j0 + q0 * NR, cols = (q1 * NR < nc ? q1 * NR : nc) - q0 * NR;
  if (cols <= 0) return;
  const long off = g.transB ? c0 * g.ldb + p0 : p0 * g.ldb + c0;
  const void* src = g.btype == B_F32 ? static_cast<const void*>(static_cast<const float*>(g.B) + off)
                                     : static_cast<const void*>(static_cast<const uint16_t*>(g.B) + off);
  pk(dst + q0 * NR * kc, NR, src, g.btype, g.ldb, g.transB, cols, kc);
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

// C[ir.., jr..] for MR-row panels [pa_first, pa_last) x NR-column panels [pb_first, pb_last) of packed A and B:
// ir outer, jr inner, so the A micro-panel (MR x kc) stays in L1 while B micro-panels stream from L2 (BLIS's
// assignment, with our row-major roles swapped). Edge tiles go through a padded copy (same FMAs as a full tile).
void macro(const GemmArgs& g, const IsaKernels* isa, const float* pa, const float* pb, long ic, long mc, long jc,
           long nc, long kc, float beta, long ir0, long ir1, long jr0, long jr1) {
  const int MR = isa->MR, NR = isa->NR;
  alignas(64) float tile[32 * 32];
  for (long ir = ir0; ir < ir1 && ir < mc; ir += MR) {
    const long mr = mc - ir < MR ? mc - ir : MR;
    const float* ap = pa + ir * kc;
    for (long jr = jr0; jr < jr1 && jr < nc; jr += NR) {
      const long nr = nc - jr < NR ? nc - jr : NR;
      const float* bp = pb + jr * kc;
      float* c = g.C + (ic + ir) * g.ldc + jc + jr;
      if (mr == MR && nr == NR) {
        isa->micro(kc, ap, bp, c, g.ldc, g.alpha, beta);
      } else {
        if (beta != 0.0f)
          for (long r = 0; r < mr; ++r) std::memcpy(tile + r * NR, c + r * g.ldc, nr * sizeof(float));
        isa->micro(kc, ap, bp, tile, NR, g.alpha, beta);
        for (long r = 0; r < mr; ++r) std::memcpy(c + r * g.ldc, tile + r * NR, nr * sizeof(float));
      }
    }
  }
}

// The whole loop nest for one block of C on one thread; `g` may describe a sub-matrix.
void gemm_block(const GemmArgs& g, const IsaKernels* isa) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    scale_c(g);
    return;
  }
  const int MR = isa->MR, NR = isa->NR;
  const pack_fn pk = packer(isa);
  const long MC = MR * MC_PANELS;
  const long nc_max = g.N < NC ? ((g.N + NR - 1) / NR) * NR : NC;
  const long kc_max = k_block(g.K);
  float* pb = t_pack_b.get(nc_max * kc_max);
  float* pa = t_pack_a.get(MC * kc_max);
  for (long jc = 0; jc < g.N; jc += NC) {
    const long nc = g.N - jc < NC ? g.N - jc : NC;
    for (long pc = 0; pc < g.K; pc += kc_max) {
      const long kc = g.K - pc < kc_max ? g.K - pc : kc_max;
      const float beta = pc == 0 ? g.beta : 1.0f;
      pack_b_panels(pb, g, pk, jc, nc, 0, (nc + NR - 1) / NR, pc, kc, NR);
      for (long ic = 0; ic < g.M; ic += MC) {
        const long mc = g.M - ic < MC ? g.M - ic : MC;
        pack_a_panels(pa, g, pk, ic, mc, 0, (mc + MR - 1) / MR, pc, kc, MR);
        macro(g, isa, pa, pb, ic, mc, jc, nc, kc, beta, 0, mc, 0, nc);
      }
    }
  }
}

}  // namespace

void gemm_st(const GemmArgs& g) { gemm_block(g, isa_active()); }

// Multi-threaded: each thread runs the whole loop nest on its own contiguous block of C (rows when M >= N, else
// columns), packing what it needs itself. One join at the end and no barriers in between: on a shared VM a
// preempted core then delays only its own block (measured: a cooperative pack-then-compute scheme with shared
// panels and two barriers per block was 5-10% slower here).
void gemm(const GemmArgs& g) {
  const IsaKernels* isa = isa_active();
  const int nth = pool_threads();
  const double flops = 2.0 * g.M * g.N * g.K;
  if (nth == 1 || flops < 2e5 || pool_nested()) {
    gemm_block(g, isa);
    return;
  }
  const bool split_m = g.M >= g.N;
  pool_run([&](int ith, int n) {
    long b, e;
    GemmArgs s = g;
    if (split_m) {
      pool_split(g.M, ith, n, isa->MR, &b, &e);
      s.M = e - b;
      s.C = g.C + b * g.ldc;
      s.A = g.transA ? g.A + b : g.A + b * g.lda;
    } else {
      pool_split(g.N, ith, n, isa->NR, &b, &e);
      s.N = e - b;
      s.C = g.C + b;
      long off = g.transB ? b * g.ldb : b;
      s.B = g.btype == B_F32 ? static_cast<const void*>(static_cast<const float*>(g.B) + off)
                             : static_cast<const void*>(static_cast<const uint16_t*>(g.B) + off);
    }
    if (e > b) gemm_block(s, isa);
  });
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
