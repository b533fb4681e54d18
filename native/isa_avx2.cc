// AVX2+FMA kernels: 6x16 SGEMM micro-kernel (also the narrow tile of the transposed-output route), panel packer, a
// vectorised exp (Cephes expf polynomial) and the row kernels over it.
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "isa.h"

namespace perp {
namespace {

constexpr int MR = 6, NR = 16;

// B rows the micro-kernel prefetches ahead (32 x 64 B = 2 KB), and k steps ahead of a strided A (see STRIDED). Measured
// on a Zen 3 (2 vCPUs, AVX2 only) by alternating variants product by product in one process: B prefetch 32-48 rows
// ahead beat none by about one point of peak on sgemm 4096^3 (16: no gain), llama768 steps the same within noise; the
// strided A prefetch made the LoRA products dA and dB (16x768x512, 2048x16x512, A^T) 25-45% faster (48 or 96 steps
// ahead: no better).
#ifndef PF
#define PF 32
#endif
#ifndef PFA
#define PFA 24
#endif

// ROWS: A row-major in place (row i at A + i * sa), else a k-major panel (k stride sa); the same FMAs either way.
// With ROWS, K2 more steps follow over the k-major panel A2.
// The k loops are unrolled by 4 (the same FMAs in the same order): on the Zen 3 the rolled loop ran the tile at 84% of
// the FMA peak with both panels in L1/L2 (a standalone harness, K = 1024), unrolled by 2 at 91% and by 4 at 93%. In
// the engine, old and new builds alternated process by process (4 rounds): sgemm 4096^3 on two threads 71-78% -> 81-96%
// of peak, a 480x256x256 product in L2 on one thread 67-80% -> 71-88%.
// STRIDED: a k-major A read in place (sa != MR: a LoRA product's activations), whose k step of 6 values can span two
// cache lines, both prefetched PFA steps ahead (hardware prefetchers do not follow a stride of a whole row).
template <bool ROWS, bool STRIDED = false>
void micro_t(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha, float beta,
             long K2 = 0, const float* A2 = nullptr) {
  __m256 c[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (long k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(B);
    const __m256 b1 = _mm256_loadu_ps(B + 8);
    _mm_prefetch((const char*)(B + PF * sb), _MM_HINT_T0);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(ROWS ? A + i * sa + k : A + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
    if (!ROWS) {
      if (STRIDED) {
        _mm_prefetch((const char*)(A + PFA * sa), _MM_HINT_T0);
        _mm_prefetch((const char*)(A + PFA * sa + MR - 1), _MM_HINT_T0);
      }
      A += sa;
    }
    B += sb;
  }
#pragma GCC unroll 4
  for (long k = 0; k < K2; ++k) {
    const __m256 b0 = _mm256_loadu_ps(B);
    const __m256 b1 = _mm256_loadu_ps(B + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(A2 + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
    A2 += MR;
    B += sb;
  }
  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(C + i * ldc, _mm256_mul_ps(va, c[i][0]));
      _mm256_storeu_ps(C + i * ldc + 8, _mm256_mul_ps(va, c[i][1]));
    }
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      float* r = C + i * ldc;
      _mm256_storeu_ps(r, _mm256_fmadd_ps(vb, _mm256_loadu_ps(r), _mm256_mul_ps(va, c[i][0])));
      _mm256_storeu_ps(r + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(r + 8), _mm256_mul_ps(va, c[i][1])));
    }
  }
}

void micro(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha, float beta) {
  if (sa == MR) micro_t<false>(K, A, sa, B, sb, C, ldc, alpha, beta);
  else micro_t<false, true>(K, A, sa, B, sb, C, ldc, alpha, beta);
}

void micro_rowa(long K, const float* A, long lda, long K2, const float* A2, const float* B, long sb, float* C,
                long ldc, float alpha, float beta) {
  micro_t<true>(K, A, lda, B, sb, C, ldc, alpha, beta, K2, A2);
}

// ------------------------------------------------------------------------------------------------ packing
// Exact widening of one bf16 / f16 value (the packer's path for half-precision frozen weights).
inline float widen(const void* src, int dtype, long idx) {
  if (dtype == 0) return static_cast<const float*>(src)[idx];
  const unsigned h = static_cast<const unsigned short*>(src)[idx];
  unsigned u;
  if (dtype == 1) {
    u = h << 16;
  } else {  // IEEE half: sign, 5-bit exponent, 10-bit mantissa
    const unsigned sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) {
      u = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
      u = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
      u = sign;
    } else {  // a subnormal half: normalised
      unsigned mm = m, ee = 113;
      while (!(mm & 0x400)) {
        mm <<= 1;
        --ee;
      }
      u = sign | (ee << 23) | ((mm & 0x3ff) << 13);
    }
  }
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// Source rows ahead (k-major copies) and elements ahead along a row (transposing copies) that the packer prefetches,
// as in the AVX-512 packer.
constexpr long kPackRowsAhead = 8, kPackColsAhead = 128;

// In-register 8x8 transpose: r[i] lane j -> r[j] lane i.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int g = 0; g < 2; ++g) {
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
    r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
  }
}

// One panel element by element (any dtype; columns [c, c + wp) of the source, zero past them).
void pack_panel_scalar(float* d, int W, const void* src, int dtype, long ld, bool trans, long c, long wp, long kc) {
  for (long k = 0; k < kc; ++k)
    for (int j = 0; j < W; ++j)
      d[k * W + j] = j < wp ? widen(src, dtype, trans ? (c + j) * ld + k : k * ld + c + j) : 0.0f;
}

// See pack_fn (isa.h). Fast paths for f32 sources and full panels of W = 16 (B) or 6 (A): k-major rows copied with
// unmasked 8-lane loads and stores, transposing copies through 8x8 in-register transposes; a 6-wide panel's 8-lane
// store spills 2 lanes into its next row, which is written after it (its last row is stored 6 wide). Ragged panels
// and half-precision sources go element by element.
void pack(float* dst, int W, const void* src, int dtype, long ld, bool trans, long w, long kc, long ps) {
  const long np = (w + W - 1) / W;
  const float* sf = static_cast<const float*>(src);
  const __m256i six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
  for (long p = 0; p < np; ++p) {
    float* d = dst + p * ps;
    const long c = p * W, wp = w - c < W ? w - c : W;
    if (dtype != 0 || wp < W || (W != 16 && W != 6) || (W == 6 && !trans && c + 8 > w)) {
      pack_panel_scalar(d, W, src, dtype, ld, trans, c, wp, kc);
      continue;
    }
    if (!trans && W == 16) {
      const float* sp = sf + c;
      for (long k = 0; k < kc; ++k) {
        _mm_prefetch(reinterpret_cast<const char*>(sp + (k + kPackRowsAhead) * ld), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(sp + (k + kPackRowsAhead) * ld + 15), _MM_HINT_T0);
        _mm256_storeu_ps(d + k * 16, _mm256_loadu_ps(sp + k * ld));
        _mm256_storeu_ps(d + k * 16 + 8, _mm256_loadu_ps(sp + k * ld + 8));
      }
      continue;
    }
    if (!trans) {  // W == 6, with 8 source columns in bounds
      const float* sp = sf + c;
      for (long k = 0; k < kc; ++k) {
        _mm_prefetch(reinterpret_cast<const char*>(sp + (k + kPackRowsAhead) * ld), _MM_HINT_T0);
        const __m256 v = _mm256_loadu_ps(sp + k * ld);
        if (k + 1 < kc) _mm256_storeu_ps(d + k * 6, v);
        else _mm256_maskstore_ps(d + k * 6, six, v);
      }
      continue;
    }
    // Transposing: source row c + i holds element (c + i, k) at [k]; 8 rows x 8 k per transpose.
    const long kfull = kc / 8 * 8;
    for (int h = 0; h < W; h += 8) {  // the 8-row halves of a 16-wide panel; a 6-wide one at once, 2 rows zero
      const int rows = W - h < 8 ? W - h : 8;
      const float* s[8];
      for (int i = 0; i < 8; ++i) s[i] = sf + (c + h + (i < rows ? i : 0)) * ld;
      __m256 r[8];
      for (long k = 0; k < kfull; k += 8) {
        if ((k & 15) == 0)
          for (int i = 0; i < rows; ++i)
            _mm_prefetch(reinterpret_cast<const char*>(s[i] + k + kPackColsAhead), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(s[i] + k) : _mm256_setzero_ps();
        transpose8(r);
        if (W == 16) {
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(d + (k + j) * 16 + h, r[j]);
        } else {
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) {
            if (k + j + 1 < kc) _mm256_storeu_ps(d + (k + j) * 6, r[j]);
            else _mm256_maskstore_ps(d + (k + j) * 6, six, r[j]);
          }
        }
      }
      for (long k = kfull; k < kc; ++k)
        for (int i = 0; i < rows; ++i) d[k * W + h + i] = s[i][k];
    }
  }
}

inline __m256 vexp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  // 2^fx built in the exponent field; fx in [-126, 127] after the clamp.
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(tiny, y);
}

float expsum(float* x, long n, float sub) {
  const __m256 vs = _mm256_set1_ps(sub);
  __m256 acc = _mm256_setzero_ps();
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = vexp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  if (i < n) {
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long j = i; j < n; ++j) tail[j - i] = x[j] - sub;
    __m256 e = vexp(_mm256_loadu_ps(tail));
    _mm256_storeu_ps(tail, e);
    for (long j = i; j < n; ++j) {
      x[j] = tail[j - i];
      s += tail[j - i];
    }
  }
  return s;
}

// Horizontal sum / max of 8 lanes in a fixed order.
inline float hsum(__m256 v) {
  const __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 y = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
}
inline float hmax(__m256 v) {
  const __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 y = _mm_max_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_max_ss(y, _mm_movehdup_ps(y)));
}

// Lanes [0, n) of a mask for _mm256_maskload/maskstore (n < 8): the tails of the row kernels.
inline __m256i tail_mask(long n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void zero_tail(float* x, long from, long to) {
  long i = from;
  for (; i + 8 <= to; i += 8) _mm256_storeu_ps(x + i, _mm256_setzero_ps());
  for (; i < to; ++i) x[i] = 0.0f;
}

// Max over x[0, n), n >= 1 (every lane starts at x[0]).
inline float rowmax(const float* x, long n) {
  __m256 vm = _mm256_set1_ps(x[0]);
  long i = 0;
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  float mx = hmax(vm);
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

void scale_row(float* x, long n, float s) {
  const __m256 vs = _mm256_set1_ps(s);
  long i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(vs, _mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = s * x[i];
}

void softmax(float* x, long len, long n) {
  scale_row(x, len, 1.0f / expsum(x, len, rowmax(x, len)));
  zero_tail(x, len, n);
}

void softmax_bwd(float* ds, const float* p, long len, long n) {
  __m256 acc = _mm256_setzero_ps();
  long i = 0;
  for (; i + 8 <= len; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(ds + i), _mm256_loadu_ps(p + i), acc);
  float dsum = hsum(acc);
  for (; i < len; ++i) dsum += ds[i] * p[i];
  const __m256 d = _mm256_set1_ps(dsum);
  for (i = 0; i + 8 <= len; i += 8)
    _mm256_storeu_ps(ds + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(ds + i), d)));
  for (; i < len; ++i) ds[i] = p[i] * (ds[i] - dsum);
  zero_tail(ds, len, n);
}

float xent_row(float* e, const float* l, long n, float scale) {
  const float mx = rowmax(l, n);
  const __m256 vs = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = vexp(_mm256_sub_ps(_mm256_loadu_ps(l + i), vs));
    _mm256_storeu_ps(e + i, x);
    acc = _mm256_add_ps(acc, x);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 x = _mm256_and_ps(_mm256_castsi256_ps(m), vexp(_mm256_sub_ps(_mm256_maskload_ps(l + i, m), vs)));
    _mm256_maskstore_ps(e + i, m, x);
    acc = _mm256_add_ps(acc, x);
  }
  const float sum = hsum(acc);
  if (scale != 0.0f) scale_row(e, n, scale / sum);
  return (float)(__builtin_log((double)sum) + mx);
}

// Separate multiplies and adds in the scalar loop's order (see isa.h), so the same bits on every path.
void adamw(float* p, const float* g, float* m, float* v, long n, const float* k) {
  const __m256 decay = _mm256_set1_ps(k[0]), b1 = _mm256_set1_ps(k[1]), c1 = _mm256_set1_ps(k[2]);
  const __m256 b2 = _mm256_set1_ps(k[3]), c2 = _mm256_set1_ps(k[4]), ss = _mm256_set1_ps(k[5]);
  const __m256 bc = _mm256_set1_ps(k[6]), eps = _mm256_set1_ps(k[7]);
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gi));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc), eps);
    _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(ss, mi), den)));
  }
  if (i < n) isa_scalar()->adamw(p + i, g + i, m + i, v + i, n - i, k);  // the tail: the scalar loop itself
}

long nonfinite(const float* x, long n) {
  const __m256i expmask = _mm256_set1_epi32(0x7f800000);
  long bad = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i e = _mm256_cmpeq_epi32(_mm256_and_si256(u, expmask), expmask);
    bad += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(e)));
  }
  for (; i < n; ++i) {
    unsigned u;
    __builtin_memcpy(&u, x + i, 4);
    bad += (u & 0x7f800000u) == 0x7f800000u;
  }
  return bad;
}

// s = 1 / (1 + exp(-g)) exactly as sigmoid_chunk in kernels.cc computes it over this file's expsum (exp of (-g) - 0,
// then an IEEE divide).
inline __m256 vsigmoid(__m256 g) {
  const __m256 z = _mm256_setzero_ps();
  const __m256 e = vexp(_mm256_sub_ps(_mm256_sub_ps(z, g), z));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// Whole 8-lane blocks unmasked, the tail through maskload / maskstore (lanes past n read as 0, never written).
template <bool kTail>
inline __m256 ld8(const float* p, __m256i m) {
  return kTail ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}
template <bool kTail>
inline void st8(float* p, __m256i m, __m256 v) {
  if (kTail) _mm256_maskstore_ps(p, m, v);
  else _mm256_storeu_ps(p, v);
}

template <bool kTail>
inline void swiglu_fwd8(float* out, const float* g, const float* u, __m256i m) {
  const __m256 gv = ld8<kTail>(g, m), s = vsigmoid(gv);
  st8<kTail>(out, m, _mm256_mul_ps(_mm256_mul_ps(gv, s), ld8<kTail>(u, m)));
}

void swiglu_fwd(float* out, const float* g, const float* u, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8) swiglu_fwd8<false>(out + i, g + i, u + i, _mm256_setzero_si256());
  if (i < n) swiglu_fwd8<true>(out + i, g + i, u + i, tail_mask(n - i));
}

template <bool kTail>
inline void swiglu_bwd8(float* dg, float* du, const float* dout, const float* g, const float* u, __m256i m) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 gv = ld8<kTail>(g, m), s = vsigmoid(gv), d = ld8<kTail>(dout, m);
  if (du) st8<kTail>(du, m, _mm256_mul_ps(d, _mm256_mul_ps(gv, s)));
  if (dg) {
    const __m256 a = _mm256_mul_ps(_mm256_mul_ps(d, ld8<kTail>(u, m)), s);
    st8<kTail>(dg, m, _mm256_mul_ps(a, _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, s)))));
  }
}

void swiglu_bwd(float* dg, float* du, const float* dout, const float* g, const float* u, long n) {
  long i = 0;
  for (; i + 8 <= n; i += 8)
    swiglu_bwd8<false>(dg ? dg + i : nullptr, du ? du + i : nullptr, dout + i, g + i, u + i, _mm256_setzero_si256());
  if (i < n)
    swiglu_bwd8<true>(dg ? dg + i : nullptr, du ? du + i : nullptr, dout + i, g + i, u + i, tail_mask(n - i));
}

void obs_update(float* w, const float* h, double e, long n) {
  const __m256d ve = _mm256_set1_pd(e);
  long j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d hv = _mm256_cvtps_pd(_mm_loadu_ps(h + j)), wv = _mm256_cvtps_pd(_mm_loadu_ps(w + j));
    _mm_storeu_ps(w + j, _mm256_cvtpd_ps(_mm256_sub_pd(wv, _mm256_mul_pd(ve, hv))));
  }
  for (; j < n; ++j) w[j] = (float)((double)w[j] - e * (double)h[j]);
}

double peak(long iters, float* sink) {
  __m256 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = _mm256_fmadd_ps(c[i], a, b);
  }
  float lanes[8];
  __m256 s = c[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, c[i]);
  _mm256_storeu_ps(lanes, s);
  *sink = lanes[0];
  return 2.0 * 12 * 8 * (double)iters;
}

// See rope_fn: 8 lanes; interleaved pairs swapped within the vector, their angles widened to both lanes of a pair.
void rope(float* out, const float* x, const float* c, const float* s, long H, long D, long R, bool interleaved,
          float sgn) {
  const long half = R / 2;
  const __m256 vs = _mm256_set1_ps(sgn);
  for (long h = 0; h < H; ++h) {
    const float* xi = x + h * D;
    float* oi = out + h * D;
    long i = 0;
    if (interleaved) {
      for (; i + 4 <= half; i += 4) {  // 8 values = pairs i .. i+3
        const __m128 c4 = _mm_loadu_ps(c + i), s4 = _mm_mul_ps(_mm256_castps256_ps128(vs), _mm_loadu_ps(s + i));
        const __m256 cc = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
        const __m128 n4 = _mm_sub_ps(_mm_setzero_ps(), s4);
        const __m256 ss = _mm256_set_m128(_mm_unpackhi_ps(n4, s4), _mm_unpacklo_ps(n4, s4));
        const __m256 v = _mm256_loadu_ps(xi + 2 * i), w = _mm256_permute_ps(v, 0xB1);
        _mm256_storeu_ps(oi + 2 * i, _mm256_add_ps(_mm256_mul_ps(v, cc), _mm256_mul_ps(w, ss)));
      }
      for (; i < half; ++i) {
        const float a = xi[2 * i], b = xi[2 * i + 1], si = sgn * s[i];
        oi[2 * i] = a * c[i] - b * si;
        oi[2 * i + 1] = b * c[i] + a * si;
      }
    } else {
      for (; i + 8 <= half; i += 8) {
        const __m256 a = _mm256_loadu_ps(xi + i), b = _mm256_loadu_ps(xi + i + half);
        const __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_mul_ps(vs, _mm256_loadu_ps(s + i));
        _mm256_storeu_ps(oi + i, _mm256_sub_ps(_mm256_mul_ps(a, cv), _mm256_mul_ps(b, sv)));
        _mm256_storeu_ps(oi + i + half, _mm256_add_ps(_mm256_mul_ps(b, cv), _mm256_mul_ps(a, sv)));
      }
      for (; i < half; ++i) {
        const float a = xi[i], b = xi[i + half], si = sgn * s[i];
        oi[i] = a * c[i] - b * si;
        oi[i + half] = b * c[i] + a * si;
      }
    }
  }
}

// name, MR, NR, micro, MR16, micro16, pack, dot, expsum, softmax, softmax_bwd, xent_row, adamw, nonfinite, peak,
// swiglu_fwd, swiglu_bwd, micro_rowa, obs_update, rope
const IsaKernels kTable = {"avx2",     MR,          NR,       micro,      MR,         micro,   pack,    nullptr,
                           expsum,     softmax,     softmax_bwd, xent_row, adamw,     nonfinite,  peak,
                           swiglu_fwd, swiglu_bwd, micro_rowa, obs_update, rope};

}  // namespace

const IsaKernels* isa_avx2() { return &kTable; }

}  // namespace perp
#pragma GCC pop_options
#endif
