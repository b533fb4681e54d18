// Portable scalar kernels (baseline ISA): the fallback path and the rounding contract the SIMD paths follow.
#include <cmath>

#include "isa.h"

namespace perp {
namespace {

constexpr int MR = 4, NR = 8;

void micro(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha, float beta) {
  float c[MR][NR] = {};
  for (long k = 0; k < K; ++k) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[i][j] += A[i] * B[j];
    A += sa;
    B += sb;
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float* r = C + i * ldc + j;
      *r = beta == 0.0f ? alpha * c[i][j] : beta * *r + alpha * c[i][j];
    }
}

float expsum(float* x, long n, float sub) {
  float s = 0.0f;
  for (long i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - sub);
    s += x[i];
  }
  return s;
}

void softmax(float* x, long len, long n) {
  float mx = x[0];
  for (long j = 1; j < len; ++j) mx = x[j] > mx ? x[j] : mx;
  const float inv = 1.0f / expsum(x, len, mx);
  for (long j = 0; j < len; ++j) x[j] *= inv;
  for (long j = len; j < n; ++j) x[j] = 0.0f;
}

void softmax_bwd(float* ds, const float* p, long len, long n) {
  float d = 0.0f;
  for (long j = 0; j < len; ++j) d += ds[j] * p[j];
  for (long j = 0; j < len; ++j) ds[j] = p[j] * (ds[j] - d);
  for (long j = len; j < n; ++j) ds[j] = 0.0f;
}

float xent_row(float* e, const float* l, long n, float scale) {
  float mx = l[0];
  for (long j = 1; j < n; ++j) mx = l[j] > mx ? l[j] : mx;
  float sum = 0.0f;
  for (long j = 0; j < n; ++j) {
    e[j] = std::exp(l[j] - mx);
    sum += e[j];
  }
  if (scale != 0.0f) {
    const float inv = scale / sum;
    for (long j = 0; j < n; ++j) e[j] *= inv;
  }
  return (float)(std::log((double)sum) + mx);
}

void adamw(float* p, const float* g, float* m, float* v, long n, const float* k) {
  for (long i = 0; i < n; ++i) {
    const float gi = g[i];
    float pi = p[i] * k[0];
    const float mi = k[1] * m[i] + k[2] * gi;
    const float vi = k[3] * v[i] + k[4] * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    pi -= (k[5] * mi) / (std::sqrt(vi) / k[6] + k[7]);
    p[i] = pi;
  }
}

long nonfinite(const float* x, long n) {
  long bad = 0;
  for (long i = 0; i < n; ++i) bad += std::isfinite(x[i]) ? 0 : 1;
  return bad;
}

double peak(long iters, float* sink) {
  float c[16];
  for (int i = 0; i < 16; ++i) c[i] = 1.0f + i * 1e-3f;
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 16; ++i) c[i] = c[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < 16; ++i) s += c[i];
  *sink = s;
  return 2.0 * 16 * (double)iters;
}

// name, MR, NR, micro, MR16, micro16, pack, dot, expsum, softmax, softmax_bwd, xent_row, adamw, nonfinite, peak,
// swiglu_fwd, swiglu_bwd, micro_rowa (none: reading A rows in place ran 2-3x slower than packing them here),
// obs_update, rope (the generic loops)
const IsaKernels kTable = {"scalar",    MR,       NR,    micro,     0,    nullptr, nullptr, nullptr, expsum, softmax,
                           softmax_bwd, xent_row, adamw, nonfinite, peak, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

const IsaKernels* isa_scalar() { return &kTable; }

}  // namespace perp
