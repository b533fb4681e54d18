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

// op(A)[i0 .. i0+mc) x [p0 .. p0+kc) → panels of MR rows: dst[panel][k*MR + r], zero-padded.
void pack_a(float* dst, const GemmArgs& g, long i0, long mc, long p0, long kc, int MR) {
  for (long ip = 0; ip < mc; ip += MR) {
    long mr = mc - ip < MR ? mc - ip : MR;
    float* d = dst + ip * kc;
    if (!g.transA) {
      pack_transpose(d, MR, g.A + (i0 + ip) * g.lda + p0, g.lda, mr, kc);
    } else {
      for (long k = 0; k < kc; ++k) {
        const float* src = g.A + (p0 + k) * g.lda + i0 + ip;
        for (long r = 0; r < mr; ++r) d[k * MR + r] = src[r];
      }
    }
    if (mr < MR)
      for (long k = 0; k < kc; ++k)
        for (long r = mr; r < MR; ++r) d[k * MR + r] = 0.0f;
  }
}

template <int BT>
void pack_b_t(float* dst, const GemmArgs& g, long j0, long nc, long p0, long kc, int NR) {
  for (long jp = 0; jp < nc; jp += NR) {
    long nr = nc - jp < NR ? nc - jp : NR;
    float* d = dst + jp * kc;
    if (!g.transB) {
      for (long k = 0; k < kc; ++k) {
        long base = (p0 + k) * g.ldb + j0 + jp;
        for (long c = 0; c < nr; ++c) d[k * NR + c] = load_b(g.B, BT, base + c);
        for (long c = nr; c < NR; ++c) d[k * NR + c] = 0.0f;
      }
    } else if (BT == B_F32) {
      pack_transpose(d, NR, static_cast<const float*>(g.B) + (j0 + jp) * g.ldb + p0, g.ldb, nr, kc);
      if (nr < NR)
        for (long k = 0; k < kc; ++k)
          for (long c = nr; c < NR; ++c) d[k * NR + c] = 0.0f;
    } else {
      for (long k = 0; k < kc; ++k) {
        for (long c = 0; c < nr; ++c) d[k * NR + c] = load_b(g.B, BT, (j0 + jp + c) * g.ldb + p0 + k);
        for (long c = nr; c < NR; ++c) d[k * NR + c] = 0.0f;
      }
    }
  }
}

void pack_b(float* dst, const GemmArgs& g, long j0, long nc, long p0, long kc, int NR) {
  if (g.btype == B_F32) pack_b_t<B_F32>(dst, g, j0, nc, p0, kc, NR);
  else if (g.btype == B_BF16) pack_b_t<B_BF16>(dst, g, j0, nc, p0, kc, NR);
  else pack_b_t<B_F16>(dst, g, j0, nc, p0, kc, NR);
}

void scale_c(const GemmArgs& g) {
  for (long i = 0; i < g.M; ++i) {
    float* r = g.C + i * g.ldc;
    for (long j = 0; j < g.N; ++j) r[j] = g.beta == 0.0f ? 0.0f : g.beta * r[j];
  }
}

// The whole loop nest for one block of C; `g` may describe a sub-matrix.
void gemm_block(const GemmArgs& g, const IsaKernels* isa) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    scale_c(g);
    return;
  }
  const int MR = isa->MR, NR = isa->NR;
  const long MC = MR * MC_PANELS;
  const long nc_max = g.N < NC ? ((g.N + NR - 1) / NR) * NR : NC;
  // Balanced K blocks (e.g. K=512 → 2 x 256 rather than 384 + 128); every element still sees the same blocks.
  const long kblocks = (g.K + KC - 1) / KC;
  const long kcb = ((g.K + kblocks - 1) / kblocks + 7) / 8 * 8;
  const long kc_max = g.K < kcb ? g.K : kcb;
  float* pb = t_pack_b.get(nc_max * kc_max);
  float* pa = t_pack_a.get(MC * kc_max);
  alignas(64) float tile[32 * 32];
  for (long jc = 0; jc < g.N; jc += NC) {
    long nc = g.N - jc < NC ? g.N - jc : NC;
    for (long pc = 0; pc < g.K; pc += kc_max) {
      long kc = g.K - pc < kc_max ? g.K - pc : kc_max;
      float beta = pc == 0 ? g.beta : 1.0f;
      pack_b(pb, g, jc, nc, pc, kc, NR);
      for (long ic = 0; ic < g.M; ic += MC) {
        long mc = g.M - ic < MC ? g.M - ic : MC;
        pack_a(pa, g, ic, mc, pc, kc, MR);
        // ir outer, jr inner: the A micro-panel (MR x kc) stays in L1 while B micro-panels stream from the packed
        // B block in L2 (BLIS's assignment, with our row-major roles swapped).
        for (long ir = 0; ir < mc; ir += MR) {
          long mr = mc - ir < MR ? mc - ir : MR;
          const float* ap = pa + ir * kc;
          for (long jr = 0; jr < nc; jr += NR) {
            long nr = nc - jr < NR ? nc - jr : NR;
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
    }
  }
}

}  // namespace

void gemm_st(const GemmArgs& g) { gemm_block(g, isa_active()); }

void gemm(const GemmArgs& g) {
  const IsaKernels* isa = isa_active();
  int nth = pool_threads();
  double flops = 2.0 * g.M * g.N * g.K;
  if (nth == 1 || flops < 2e5) {
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
