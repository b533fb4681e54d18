// AVX-512 kernels: 12x32 SGEMM micro-kernel and a vectorised exp (Cephes expf polynomial, scalef for 2^n).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")
#include <immintrin.h>

#include <cstdint>

#include "isa.h"

namespace perp {
namespace {

constexpr int MR = 12, NR = 32;
// B rows the micro-kernel prefetches ahead (48 x 128 B = 6 KB): with K blocks of 1024 a B panel streams from L2 (from
// L3 on a group's first pass); measured against 8-64 by alternating builds in one process, 32-64 beat 16 by about one
// point of peak on sgemm 4096^3 and left the llama768 steps unchanged.
#ifndef PF
#define PF 48
#endif
#ifndef PFA
#define PFA 24
#endif

// C (MR_ x 16 NV, row stride ldc) = alpha * acc + beta * C; with beta 0, C is only written.
template <int MR_, int NV>
inline void store_tile(const __m512 (&c)[MR_][NV], float* C, long ldc, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR_; ++i)
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(C + i * ldc + 16 * j, _mm512_mul_ps(va, c[i][j]));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR_; ++i)
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) {
        float* r = C + i * ldc + 16 * j;
        _mm512_storeu_ps(r, _mm512_fmadd_ps(vb, _mm512_loadu_ps(r), _mm512_mul_ps(va, c[i][j])));
      }
  }
}

// MR_ x (16 NV) register tile. A: a k-major panel (MR_ values per k, k stride sa), or with ROWS MR_ rows read in place
// (row i at A + i * sa, element k at [k]; addressed from bases three rows apart plus 0-2 row strides, so twelve rows
// take five registers) followed by K2 steps over the k-major panel A2. The same FMAs in the same order either way, so
// the same bits.
// STRIDED: a k-major A read in place (row stride sa != MR_, e.g. a LoRA product's activations), whose k step of MR_
// values can span two cache lines: both are prefetched. Hardware stride prefetchers do not follow a stride of a whole
// activation row (Intel's L1 one stops at 2 KB). Measured on an Intel Xeon (Emerald Rapids, 2 threads of a 16-vCPU
// guest), alternated in one process: the LoRA product dB 2048x16x512 (TN) 277 -> 223 us, llama768 PEFT step +7.9%,
// full +2.3%; on Zen 5 the same steps within noise (PEFT +1.3%).
template <int MR_, int NV, bool ROWS = false, bool STRIDED = false>
inline void micro_t(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha,
                    float beta, long K2 = 0, const float* A2 = nullptr) {
  static_assert(!ROWS || MR_ % 3 == 0, "row bases are three rows apart");
  __m512 c[MR_][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR_; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) c[i][j] = _mm512_setzero_ps();
  const float* base[ROWS ? MR_ / 3 : 1];
  if (ROWS)
    for (int q = 0; q < MR_ / 3; ++q) base[q] = A + 3 * q * sa;
  const long l2 = 2 * sa;
  for (long k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) {
      b[j] = _mm512_loadu_ps(B + 16 * j);
      _mm_prefetch((const char*)(B + PF * sb + 16 * j), _MM_HINT_T0);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR_; ++i) {
      const float* ai = ROWS ? base[i / 3] + k + (i % 3 == 0 ? 0 : i % 3 == 1 ? sa : l2) : A + i;
      const __m512 a = _mm512_set1_ps(*ai);
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) c[i][j] = _mm512_fmadd_ps(a, b[j], c[i][j]);
    }
    // The A panel's values PFA k-steps ahead. Measured on sgemm 4096^3 against none, 8, 16 and 32 by alternating
    // builds (medians of 7 products per run, 5-10 runs each): 16-32 beat none by about one point of peak; the
    // llama768 steps came out the same within noise.
    if (!ROWS) {
      _mm_prefetch((const char*)(A + PFA * sa), _MM_HINT_T0);
      if (STRIDED) _mm_prefetch((const char*)(A + PFA * sa + MR_ - 1), _MM_HINT_T0);
      A += sa;
    }
    B += sb;
  }
  if (ROWS)
    for (long k = 0; k < K2; ++k) {
      __m512 b[NV];
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) b[j] = _mm512_loadu_ps(B + 16 * j);
#pragma GCC unroll 32
      for (int i = 0; i < MR_; ++i) {
        const __m512 a = _mm512_set1_ps(A2[i]);
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) c[i][j] = _mm512_fmadd_ps(a, b[j], c[i][j]);
      }
      A2 += MR_;
      B += sb;
    }
  store_tile<MR_, NV>(c, C, ldc, alpha, beta);
}

void micro(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha, float beta) {
  if (sa == MR) micro_t<MR, 2>(K, A, sa, B, sb, C, ldc, alpha, beta);
  else micro_t<MR, 2, false, true>(K, A, sa, B, sb, C, ldc, alpha, beta);
}

// micro_t<12, 2> with A read row-major in place (row i at A + i * lda), then K2 steps over the panel A2.
void micro_rowa(long K, const float* A, long lda, long K2, const float* A2, const float* B, long sb, float* C,
                long ldc, float alpha, float beta) {
  micro_t<MR, 2, true>(K, A, lda, B, sb, C, ldc, alpha, beta, K2, A2);
}

// Narrow tile for N <= 16 (LoRA ranks): 24 accumulators, one B vector per k.
void micro24x16(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha, float beta) {
  if (sa == 24) micro_t<24, 1>(K, A, sa, B, sb, C, ldc, alpha, beta);
  else micro_t<24, 1, false, true>(K, A, sa, B, sb, C, ldc, alpha, beta);
}

// 16 consecutive elements (lanes past `m` zero) widened to f32.
inline __m512 load16(const void* src, int dtype, long idx, __mmask16 m) {
  if (dtype == 0) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(src) + idx);
  const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(src) + idx);
  if (dtype == 1) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// In-register 16x16 transpose: r[i] lane j -> r[j] lane i (unpack ps, unpack pd, then two 128-bit lane shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 x[16];  // x[4g + j], lane L: rows 4g..4g+3 at column 4L + j
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    x[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    x[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    x[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    x[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 y0 = _mm512_shuffle_f32x4(x[j], x[4 + j], 0x44), y1 = _mm512_shuffle_f32x4(x[j], x[4 + j], 0xEE);
    const __m512 y2 = _mm512_shuffle_f32x4(x[8 + j], x[12 + j], 0x44);
    const __m512 y3 = _mm512_shuffle_f32x4(x[8 + j], x[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(y0, y2, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(y0, y2, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(y1, y3, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(y1, y3, 0xDD);
  }
}

inline __mmask16 lanes(long n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

// Software prefetch distances of the packers: source rows ahead (k-major copies) and elements ahead along a row
// (transposing copies). The source is usually a weight matrix coming from DRAM, where the hardware prefetchers do not
// follow a packer's short, strided streams on their own (measured: the k-major copies ran 2.5-3x faster with them).
constexpr long kPackRowsAhead = 8, kPackColsAhead = 128;

inline void prefetch_span(const char* p, long bytes) {
  for (long o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

void pack(float* dst, int W, const void* src, int dtype, long ld, bool trans, long w, long kc, long ps) {
  const long np = (w + W - 1) / W;
  const char* bytes = static_cast<const char*>(src);
  const long es = dtype == 0 ? 4 : 2;  // source element size
  if (!trans && (W * es) % 64 == 0) {
    // Panel by panel, each a run of whole cache lines per source row: the panel's lines are read once, ahead.
    for (long p = 0; p < np; ++p) {
      float* d = dst + p * ps;
      const long c = p * W;
      if (dtype == 0 && W == 32 && c + W <= w) {  // the common case, unmasked (masked loads measured 2x slower)
        const float* sp = static_cast<const float*>(src) + c;
        for (long k = 0; k < kc; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(sp + (k + kPackRowsAhead) * ld), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(sp + (k + kPackRowsAhead) * ld + 16), _MM_HINT_T0);
          _mm512_storeu_ps(d + k * 32, _mm512_loadu_ps(sp + k * ld));
          _mm512_storeu_ps(d + k * 32 + 16, _mm512_loadu_ps(sp + k * ld + 16));
        }
        continue;
      }
      for (long k = 0; k < kc; ++k) {
        prefetch_span(bytes + ((k + kPackRowsAhead) * ld + c) * es, W * es);
        for (int c0 = 0; c0 < W; c0 += 16) {
          const __m512 v = c + c0 < w ? load16(src, dtype, k * ld + c + c0, lanes(w - c - c0)) : _mm512_setzero_ps();
          _mm512_storeu_ps(d + k * W + c0, v);
        }
      }
    }
    return;
  }
  if (!trans && dtype == 0 && W == 12) {
    // Narrow f32 panels (MR rows of A^T) in blocks of 16 source rows: each panel's 16 rows (768 contiguous bytes) are
    // written before the next panel's. Row by row instead, every store of a row went to another panel, and panels a
    // multiple of 4 KB apart share L1 sets: a line was evicted before its second half was written (measured 7 GB/s,
    // now 3-4x that). A full-width store spills 4 lanes into the panel's next row, written after it; the panel's last
    // row is masked.
    const float* sf = static_cast<const float*>(src);
    for (long k0 = 0; k0 < kc; k0 += 16) {
      const long k1 = kc - k0 < 16 ? kc : k0 + 16;
      for (long k = k1; k < k1 + 16 && k < kc; ++k) prefetch_span(bytes + k * ld * es, w * es);
      for (long p = 0; p < np; ++p) {
        const long c = p * 12;
        float* d = dst + p * ps;
        if (c + 16 <= w) {
          for (long k = k0; k < k1; ++k) {
            const __m512 v = _mm512_loadu_ps(sf + k * ld + c);
            if (k + 1 < kc) _mm512_storeu_ps(d + k * 12, v);
            else _mm512_mask_storeu_ps(d + k * 12, lanes(12), v);
          }
        } else {
          const __mmask16 m = lanes(w - c < 12 ? w - c : 12);
          for (long k = k0; k < k1; ++k) {
            const __m512 v = _mm512_maskz_loadu_ps(m, sf + k * ld + c);
            if (k + 1 < kc) _mm512_storeu_ps(d + k * 12, v);
            else _mm512_mask_storeu_ps(d + k * 12, lanes(12), v);
          }
        }
      }
    }
    return;
  }
  if (!trans) {
    // Other narrow panels share cache lines: row by row, every panel of the row in turn.
    for (long k = 0; k < kc; ++k) {
      prefetch_span(bytes + (k + kPackRowsAhead) * ld * es, w * es);
      for (long p = 0; p < np; ++p) {
        float* d = dst + p * ps + k * W;
        for (int c0 = 0; c0 < W; c0 += 16) {
          const long c = p * W + c0;
          const __m512 v = c < w ? load16(src, dtype, k * ld + c, lanes(w - c)) : _mm512_setzero_ps();
          _mm512_mask_storeu_ps(d + c0, lanes(W - c0), v);
        }
      }
    }
    return;
  }
  __m512 r[16];
  for (long p = 0; p < np; ++p) {
    float* d = dst + p * ps;
    for (long k0 = 0; k0 < kc; k0 += 16) {
      const long kn = kc - k0 < 16 ? kc - k0 : 16;
      const __mmask16 km = lanes(kn);
      for (int c0 = 0; c0 < W; c0 += 16) {
        const long c = p * W + c0;
        for (int i = 0; i < 16 && c + i < w; ++i)
          _mm_prefetch(bytes + ((c + i) * ld + k0 + kPackColsAhead) * es, _MM_HINT_T0);
        if (dtype == 0 && kn == 16) {  // unmasked loads where they stay inside the block
          const float* sf = static_cast<const float*>(src) + k0;
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i) r[i] = c + i < w ? _mm512_loadu_ps(sf + (c + i) * ld) : _mm512_setzero_ps();
        } else {
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i) r[i] = c + i < w ? load16(src, dtype, (c + i) * ld + k0, km) : _mm512_setzero_ps();
        }
        transpose16(r);
        if (W - c0 >= 16) {
          for (long j = 0; j < kn; ++j) _mm512_storeu_ps(d + (k0 + j) * W + c0, r[j]);
        } else if (W == 12 && c0 == 0) {
          // Narrow panel: a full-width store spills 4 lanes into the next row, which is written after it; only the
          // panel's last row (its spill would land in memory written before or by another thread) is masked.
          for (long j = 0; j < kn; ++j) {
            float* o = d + (k0 + j) * W;
            if (k0 + j + 1 < kc) _mm512_storeu_ps(o, r[j]);
            else _mm512_mask_storeu_ps(o, lanes(W), r[j]);
          }
        } else {
          const __mmask16 sm = lanes(W - c0);
          for (long j = 0; j < kn; ++j) _mm512_mask_storeu_ps(d + (k0 + j) * W + c0, sm, r[j]);
        }
      }
    }
  }
}

// Four 16-lane accumulators -> their four sums (fixed order).
inline __m128 reduce4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  const __m256 x0 = _mm256_add_ps(_mm512_castps512_ps256(v0), _mm512_extractf32x8_ps(v0, 1));
  const __m256 x1 = _mm256_add_ps(_mm512_castps512_ps256(v1), _mm512_extractf32x8_ps(v1, 1));
  const __m256 x2 = _mm256_add_ps(_mm512_castps512_ps256(v2), _mm512_extractf32x8_ps(v2, 1));
  const __m256 x3 = _mm256_add_ps(_mm512_castps512_ps256(v3), _mm512_extractf32x8_ps(v3, 1));
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(x0, x1), _mm256_hadd_ps(x2, x3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// C = alpha A Bᵀ + beta C for N <= 32 (rows of A against rows of B, both read in place). Tiles of 6 rows x 4 columns
// (24 accumulators); rows/columns past M/N repeat the last one (results discarded), so every element is computed by
// the same instruction sequence. K runs in chunks of 256: the 6 A rows' chunk (6 KB) stays in L1 while each group of
// 4 B rows runs over it, the accumulators parked in a buffer between chunks (an unchunked loop re-read 4 A rows of up
// to 8 KB each from L2 for every column group: 512x16x2048 ran at 60 GF/s per thread). Each lane still adds its k's
// in increasing order, so the chunking does not change the bits.
void dot(long M, long N, long K, const float* A, long lda, const float* B, long ldb, float* C, long ldc, float alpha,
         float beta) {
  constexpr int R = 6;
  constexpr long kChunk = 256;
  const __m128 va = _mm_set1_ps(alpha), vb = _mm_set1_ps(beta);
  const long ncb = (N + 3) / 4, kfull = K / 16 * 16;
  alignas(64) float park[8][R][4][16];
  for (long i0 = 0; i0 < M; i0 += R) {
    const float *a[R], *an[R];  // this tile's rows, the next tile's
    for (int r = 0; r < R; ++r) {
      a[r] = A + (i0 + r < M ? i0 + r : M - 1) * lda;
      an[r] = A + (i0 + R + r < M ? i0 + R + r : M - 1) * lda;
    }
    for (long k0 = 0;; k0 += kChunk) {
      const long ke = k0 + kChunk < kfull ? k0 + kChunk : kfull;
      const bool last = ke >= kfull;
      // While the first column group runs over this chunk, the rows' next chunk (or the next tile's first) is
      // prefetched: A streams from L3 or DRAM (an activation gradient written moments ago, often by the other core).
      // Offset o of this chunk maps to offset o of the next one; only addresses inside a row are formed.
      const float* pf[R];
      for (int r = 0; r < R; ++r) pf[r] = last ? an[r] : a[r] + ke;
      const long pf_end = last ? (kfull < kChunk ? kfull : kChunk) : (ke + kChunk < kfull ? ke + kChunk : kfull) - ke;
      for (long cb = 0; cb < ncb && cb < 8; ++cb) {
        const long j0 = 4 * cb;
        const float* b[4];
        for (int c = 0; c < 4; ++c) b[c] = B + (j0 + c < N ? j0 + c : N - 1) * ldb;
        __m512 acc[R][4];
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) acc[r][c] = k0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(park[cb][r][c]);
        for (long k = k0; k < ke; k += 16) {
          if (cb == 0 && k - k0 < pf_end)
            for (int r = 0; r < R; ++r) _mm_prefetch((const char*)(pf[r] + (k - k0)), _MM_HINT_T0);
          const __m512 b0 = _mm512_loadu_ps(b[0] + k), b1 = _mm512_loadu_ps(b[1] + k);
          const __m512 b2 = _mm512_loadu_ps(b[2] + k), b3 = _mm512_loadu_ps(b[3] + k);
#pragma GCC unroll 6
          for (int r = 0; r < R; ++r) {
            const __m512 x = _mm512_loadu_ps(a[r] + k);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
          }
        }
        if (!last) {
#pragma GCC unroll 6
          for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) _mm512_store_ps(park[cb][r][c], acc[r][c]);
          continue;
        }
        if (kfull < K) {
          const __mmask16 m = lanes(K - kfull);
          const __m512 b0 = _mm512_maskz_loadu_ps(m, b[0] + kfull), b1 = _mm512_maskz_loadu_ps(m, b[1] + kfull);
          const __m512 b2 = _mm512_maskz_loadu_ps(m, b[2] + kfull), b3 = _mm512_maskz_loadu_ps(m, b[3] + kfull);
          for (int r = 0; r < R; ++r) {
            const __m512 x = _mm512_maskz_loadu_ps(m, a[r] + kfull);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
          }
        }
        const long nc = N - j0 < 4 ? N - j0 : 4;
        const __mmask8 cm = (__mmask8)((1u << nc) - 1u);
        for (int r = 0; r < R && i0 + r < M; ++r) {
          __m128 s = _mm_mul_ps(va, reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
          float* c = C + (i0 + r) * ldc + j0;
          if (beta != 0.0f) s = _mm_fmadd_ps(vb, _mm_maskz_loadu_ps(cm, c), s);
          _mm_mask_storeu_ps(c, cm, s);
        }
      }
      if (last) break;
    }
  }
}

inline __m512 vexp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.72283f));
  __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  y = _mm512_scalef_ps(y, fx);
  return _mm512_mask_mov_ps(y, tiny, _mm512_setzero_ps());
}

float expsum(float* x, long n, float sub) {
  const __m512 vs = _mm512_set1_ps(sub);
  __m512 acc = _mm512_setzero_ps();
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = vexp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    __m512 e = vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    _mm512_mask_storeu_ps(x + i, m, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(acc);
}

void softmax(float* x, long len, long n) {
  __m512 vm = _mm512_set1_ps(-__builtin_inff());
  long i = 0;
  for (; i + 16 <= len; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
  if (i < len) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, lanes(len - i), x + i));
  const float inv = 1.0f / expsum(x, len, _mm512_reduce_max_ps(vm));
  const __m512 vi = _mm512_set1_ps(inv);
  for (i = 0; i + 16 <= len; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(vi, _mm512_loadu_ps(x + i)));
  if (i < len) {
    const __mmask16 m = lanes(len - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(vi, _mm512_maskz_loadu_ps(m, x + i)));
  }
  for (i = len; i < n; ++i) x[i] = 0.0f;
}

void softmax_bwd(float* ds, const float* p, long len, long n) {
  __m512 acc = _mm512_setzero_ps();
  long i = 0;
  for (; i + 16 <= len; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(ds + i), _mm512_loadu_ps(p + i), acc);
  if (i < len) {
    const __mmask16 m = lanes(len - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, ds + i), _mm512_maskz_loadu_ps(m, p + i), acc);
  }
  const __m512 d = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
  for (i = 0; i + 16 <= len; i += 16)
    _mm512_storeu_ps(ds + i, _mm512_mul_ps(_mm512_loadu_ps(p + i), _mm512_sub_ps(_mm512_loadu_ps(ds + i), d)));
  if (i < len) {
    const __mmask16 m = lanes(len - i);
    _mm512_mask_storeu_ps(
        ds + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + i), _mm512_sub_ps(_mm512_maskz_loadu_ps(m, ds + i), d)));
  }
  for (i = len; i < n; ++i) ds[i] = 0.0f;
}

float xent_row(float* e, const float* l, long n, float scale) {
  __m512 vm = _mm512_set1_ps(-__builtin_inff());
  long i = 0;
  for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(l + i));
  if (i < n) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, lanes(n - i), l + i));
  const float mx = _mm512_reduce_max_ps(vm);
  const __m512 vs = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 x = vexp(_mm512_sub_ps(_mm512_loadu_ps(l + i), vs));
    _mm512_storeu_ps(e + i, x);
    acc = _mm512_add_ps(acc, x);
  }
  if (i < n) {
    const __mmask16 m = lanes(n - i);
    const __m512 x = _mm512_maskz_mov_ps(m, vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, l + i), vs)));
    _mm512_mask_storeu_ps(e + i, m, x);
    acc = _mm512_add_ps(acc, x);
  }
  const float sum = _mm512_reduce_add_ps(acc);
  if (scale != 0.0f) {
    const __m512 vi = _mm512_set1_ps(scale / sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(e + i, _mm512_mul_ps(vi, _mm512_loadu_ps(e + i)));
    if (i < n) {
      const __mmask16 m = lanes(n - i);
      _mm512_mask_storeu_ps(e + i, m, _mm512_mul_ps(vi, _mm512_maskz_loadu_ps(m, e + i)));
    }
  }
  return (float)(__builtin_log((double)sum) + mx);
}

void adamw(float* p, const float* g, float* m, float* v, long n, const float* k) {
  const __m512 decay = _mm512_set1_ps(k[0]), b1 = _mm512_set1_ps(k[1]), c1 = _mm512_set1_ps(k[2]);
  const __m512 b2 = _mm512_set1_ps(k[3]), c2 = _mm512_set1_ps(k[4]), ss = _mm512_set1_ps(k[5]);
  const __m512 bc = _mm512_set1_ps(k[6]), eps = _mm512_set1_ps(k[7]);
  for (long i = 0; i < n; i += 16) {
    const __mmask16 mk = lanes(n - i);
    const __m512 gi = _mm512_maskz_loadu_ps(mk, g + i);
    const __m512 pi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), decay);
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(mk, m + i)), _mm512_mul_ps(c1, gi));
    const __m512 vi =
        _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(mk, v + i)), _mm512_mul_ps(c2, _mm512_mul_ps(gi, gi)));
    _mm512_mask_storeu_ps(m + i, mk, mi);
    _mm512_mask_storeu_ps(v + i, mk, vi);
    const __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc), eps);
    _mm512_mask_storeu_ps(p + i, mk, _mm512_sub_ps(pi, _mm512_div_ps(_mm512_mul_ps(ss, mi), den)));
  }
}

long nonfinite(const float* x, long n) {
  const __m512i expmask = _mm512_set1_epi32(0x7f800000);
  long bad = 0;
  for (long i = 0; i < n; i += 16) {
    const __m512i u = _mm512_maskz_loadu_epi32(lanes(n - i), x + i);
    bad += __builtin_popcount(_mm512_cmpeq_epi32_mask(_mm512_and_si512(u, expmask), expmask));
  }
  return bad;
}

// s = 1 / (1 + exp(-g)) exactly as sigmoid_chunk in kernels.cc computes it (exp of (-g) - 0, then an IEEE divide).
inline __m512 vsigmoid(__m512 g) {
  const __m512 e = vexp(_mm512_sub_ps(_mm512_sub_ps(_mm512_setzero_ps(), g), _mm512_setzero_ps()));
  return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// Whole 16-lane blocks unmasked (masked loads measured 2-3x slower on Zen 5), the tail masked.
template <bool kTail>
inline __m512 ld16(const float* p, __mmask16 m) {
  return kTail ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
}
template <bool kTail>
inline void st16(float* p, __mmask16 m, __m512 v) {
  if (kTail) _mm512_mask_storeu_ps(p, m, v);
  else _mm512_storeu_ps(p, v);
}

template <bool kTail>
inline void swiglu_fwd16(float* out, const float* g, const float* u, __mmask16 m) {
  const __m512 gv = ld16<kTail>(g, m), s = vsigmoid(gv);
  st16<kTail>(out, m, _mm512_mul_ps(_mm512_mul_ps(gv, s), ld16<kTail>(u, m)));
}

void swiglu_fwd(float* out, const float* g, const float* u, long n) {
  long i = 0;
  for (; i + 16 <= n; i += 16) swiglu_fwd16<false>(out + i, g + i, u + i, 0xFFFF);
  if (i < n) swiglu_fwd16<true>(out + i, g + i, u + i, lanes(n - i));
}

template <bool kTail>
inline void swiglu_bwd16(float* dg, float* du, const float* dout, const float* g, const float* u, __mmask16 m) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 gv = ld16<kTail>(g, m), s = vsigmoid(gv), d = ld16<kTail>(dout, m);
  if (du) st16<kTail>(du, m, _mm512_mul_ps(d, _mm512_mul_ps(gv, s)));
  if (dg) {
    const __m512 a = _mm512_mul_ps(_mm512_mul_ps(d, ld16<kTail>(u, m)), s);
    st16<kTail>(dg, m, _mm512_mul_ps(a, _mm512_add_ps(one, _mm512_mul_ps(gv, _mm512_sub_ps(one, s)))));
  }
}

void swiglu_bwd(float* dg, float* du, const float* dout, const float* g, const float* u, long n) {
  long i = 0;
  for (; i + 16 <= n; i += 16)
    swiglu_bwd16<false>(dg ? dg + i : nullptr, du ? du + i : nullptr, dout + i, g + i, u + i, 0xFFFF);
  if (i < n) swiglu_bwd16<true>(dg ? dg + i : nullptr, du ? du + i : nullptr, dout + i, g + i, u + i, lanes(n - i));
}

double peak(long iters, float* sink) {
  __m512 c[16];
  for (int i = 0; i < 16; ++i) c[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) c[i] = _mm512_fmadd_ps(c[i], a, b);
  }
  __m512 s = c[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, c[i]);
  *sink = _mm512_reduce_add_ps(s);
  return 2.0 * 16 * 16 * (double)iters;
}

void obs_update(float* w, const float* h, double e, long n) {
  const __m512d ve = _mm512_set1_pd(e);
  long j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512d hv = _mm512_cvtps_pd(_mm256_loadu_ps(h + j)), wv = _mm512_cvtps_pd(_mm256_loadu_ps(w + j));
    _mm256_storeu_ps(w + j, _mm512_cvtpd_ps(_mm512_sub_pd(wv, _mm512_mul_pd(ve, hv))));
  }
  for (; j < n; ++j) w[j] = (float)((double)w[j] - e * (double)h[j]);
}

// See rope_fn: 16 lanes (a masked tail); interleaved pairs swapped within the vector, their angles widened to both
// lanes of a pair.
void rope(float* out, const float* x, const float* c, const float* s, long H, long D, long R, bool interleaved,
          float sgn) {
  const long half = R / 2;
  const __m512 vs = _mm512_set1_ps(sgn), z = _mm512_setzero_ps();
  // lane l of a 16-lane step over pairs i.. reads angle i + l/2
  const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  for (long h = 0; h < H; ++h) {
    const float* xi = x + h * D;
    float* oi = out + h * D;
    if (interleaved) {
      for (long i = 0; i < half; i += 8) {  // 16 values = pairs i .. i+7
        const long np = half - i < 8 ? half - i : 8;
        const __mmask16 m = lanes(2 * np), m8 = lanes(np);
        const __m512 cc = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(m8, c + i));
        const __m512 sp = _mm512_permutexvar_ps(dup, _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(m8, s + i)));
        const __m512 ss = _mm512_mask_sub_ps(sp, (__mmask16)0x5555, z, sp);  // even lanes -s', odd lanes s'
        const __m512 v = _mm512_maskz_loadu_ps(m, xi + 2 * i), w = _mm512_permute_ps(v, 0xB1);
        _mm512_mask_storeu_ps(oi + 2 * i, m, _mm512_add_ps(_mm512_mul_ps(v, cc), _mm512_mul_ps(w, ss)));
      }
    } else {
      for (long i = 0; i < half; i += 16) {
        const __mmask16 m = lanes(half - i);
        const __m512 a = _mm512_maskz_loadu_ps(m, xi + i), b = _mm512_maskz_loadu_ps(m, xi + i + half);
        const __m512 cv = _mm512_maskz_loadu_ps(m, c + i), sv = _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(m, s + i));
        _mm512_mask_storeu_ps(oi + i, m, _mm512_sub_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv)));
        _mm512_mask_storeu_ps(oi + i + half, m, _mm512_add_ps(_mm512_mul_ps(b, cv), _mm512_mul_ps(a, sv)));
      }
    }
  }
}

// name, MR, NR, micro, MR16, micro16, pack, dot, expsum, softmax, softmax_bwd, xent_row, adamw, nonfinite, peak,
// swiglu_fwd, swiglu_bwd, micro_rowa, obs_update, rope
const IsaKernels kTable = {"avx512",   MR,          NR,       micro,      24,         micro24x16, pack,      dot,
                           expsum,     softmax,     softmax_bwd, xent_row, adamw,     nonfinite,  peak,
                           swiglu_fwd, swiglu_bwd, micro_rowa, obs_update, rope};

}  // namespace

const IsaKernels* isa_avx512() { return &kTable; }

}  // namespace perp
#pragma GCC pop_options
#endif
