// Coarse kernels (norms, RoPE, attention, activations, cross-entropy, AdamW, masks, selection, Cholesky).
// Work is split with pool_run; sums over rows go in fixed row chunks (or by column ranges), so results do not depend on
// the number of threads. Attention drives the GEMM micro-kernel itself; Cholesky uses the packed GEMM.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "gemm.h"
#include "isa.h"
#include "pool.h"

namespace perp {

namespace {

template <typename F>
void parallel_rows(long n, long align, F&& f) {
  pool_run([&](int ith, int nth) {
    long b, e;
    pool_split(n, ith, nth, align, &b, &e);
    if (e > b) f(b, e);
  });
}

GemmArgs gargs(float* C, long ldc, const float* A, long lda, bool ta, const float* B, long ldb, bool tb, long M, long N,
               long K, float alpha, float beta) {
  GemmArgs g;
  g.C = C;
  g.ldc = ldc;
  g.A = A;
  g.lda = lda;
  g.transA = ta;
  g.B = B;
  g.btype = B_F32;
  g.ldb = ldb;
  g.transB = tb;
  g.M = M;
  g.N = N;
  g.K = K;
  g.alpha = alpha;
  g.beta = beta;
  return g;
}

}  // namespace

// ---------------------------------------------------------------------------------------------- bias
void bias_add(float* y, const float* b, long M, long N) {
  parallel_rows(M, 1, [&](long r0, long r1) {
    for (long i = r0; i < r1; ++i)
      for (long j = 0; j < N; ++j) y[i * N + j] += b[j];
  });
}

// ---------------------------------------------------------------------------------------------- norms
namespace {
// Row reductions in double with 8 interleaved partial sums (lane j % 8, then a fixed pairwise tree): the same bits on
// every path and thread count, and no chain of dependent adds (one long chain made the norms latency-bound).
template <typename F>
double sum8(long n, F&& term) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  long j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += term(j + l);
  for (; j < n; ++j) acc[j & 7] += term(j);
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// Row passes that also sum per-column terms over the rows (the weight and bias gradients of a norm): the rows go in
// fixed chunks of kRowChunk, split across the pool; `row(i, acc)` handles row i and adds its column terms into acc
// (nacc arrays of C, zeroed per chunk). Then out[a][j] += the chunks' partial sums, in chunk order. The additions
// happen in the same order whatever the thread count, and x and dout are read once (a second, column-split pass
// over them took 2.3x the time of the row pass: 232 vs 100 us per 512x768 RMSNorm backward from DRAM).
constexpr long kRowChunk = 32;
thread_local Scratch t_colsum;

template <typename F>
void rows_with_colsums(long M, long C, int nacc, float* const* out, F&& row) {
  bool any = false;
  for (int a = 0; a < nacc; ++a) any = any || out[a];
  const long nch = (M + kRowChunk - 1) / kRowChunk, stride = nacc * C;
  float* part = any ? t_colsum.get(nch * stride) : nullptr;
  parallel_rows(nch, 1, [&](long c0, long c1) {
    for (long ch = c0; ch < c1; ++ch) {
      float* acc = part ? part + ch * stride : nullptr;
      if (acc) std::memset(acc, 0, stride * sizeof(float));
      for (long i = ch * kRowChunk; i < std::min(M, (ch + 1) * kRowChunk); ++i) row(i, acc);
    }
  });
  if (!any) return;
  parallel_rows(C, 16, [&](long j0, long j1) {
    for (int a = 0; a < nacc; ++a) {
      if (!out[a]) continue;
      for (long ch = 0; ch < nch; ++ch) {
        const float* pa = part + ch * stride + a * C;
        for (long j = j0; j < j1; ++j) out[a][j] += pa[j];
      }
    }
  });
}
}  // namespace

void bias_grad(float* db, const float* dy, long M, long N) {
  float* const outs[1] = {db};
  rows_with_colsums(M, N, 1, outs, [&](long i, float* acc) {
    const float* di = dy + i * N;
    for (long j = 0; j < N; ++j) acc[j] += di[j];
  });
}

void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, long M, long C, float eps) {
  parallel_rows(M, 1, [&](long r0, long r1) {
    for (long i = r0; i < r1; ++i) {
      const float* xi = x + i * C;
      const double ss = sum8(C, [&](long j) { return (double)xi[j] * xi[j]; });
      float r = (float)(1.0 / std::sqrt(ss / C + eps));
      if (rstd) rstd[i] = r;
      float* oi = out + i * C;
      for (long j = 0; j < C; ++j) oi[j] = w[j] * (xi[j] * r);
    }
  });
}

void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, long M,
                 long C) {
  float* const outs[1] = {dw};
  rows_with_colsums(M, C, 1, outs, [&](long i, float* acc) {
    const float *xi = x + i * C, *gi = dout + i * C;
    const float r = rstd[i];
    if (dx) {
      // sum_j g_j w_j xhat_j
      const double dot = sum8(C, [&](long j) { return (double)gi[j] * w[j] * (xi[j] * r); });
      const float c = (float)(dot / C);
      float* di = dx + i * C;
      for (long j = 0; j < C; ++j) di[j] = r * (gi[j] * w[j] - (xi[j] * r) * c);
    }
    if (acc)
      for (long j = 0; j < C; ++j) acc[j] += gi[j] * (xi[j] * r);
  });
}

void layernorm_fwd(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, long M, long C,
                   float eps) {
  parallel_rows(M, 1, [&](long r0, long r1) {
    for (long i = r0; i < r1; ++i) {
      const float* xi = x + i * C;
      const double mu = sum8(C, [&](long j) { return (double)xi[j]; }) / C;
      const double v = sum8(C, [&](long j) { return (xi[j] - mu) * (xi[j] - mu); });
      const float m = (float)mu, r = (float)(1.0 / std::sqrt(v / C + eps));
      if (mean) mean[i] = m;
      if (rstd) rstd[i] = r;
      float* oi = out + i * C;
      for (long j = 0; j < C; ++j) {
        float n = (xi[j] - m) * r;
        oi[j] = (w ? n * w[j] : n) + (b ? b[j] : 0.0f);
      }
    }
  });
}

void layernorm_bwd(float* dx, float* dw, float* db, const float* dout, const float* x, const float* mean,
                   const float* rstd, const float* w, long M, long C) {
  float* const outs[2] = {dw, db};
  rows_with_colsums(M, C, 2, outs, [&](long i, float* acc) {
    const float *xi = x + i * C, *gi = dout + i * C;
    const float m = mean[i], r = rstd[i];
    if (dx) {
      // mean(g·w), mean(g·w·xhat)
      const double s1 = sum8(C, [&](long j) { return (double)(w ? gi[j] * w[j] : gi[j]); });
      const double s2 = sum8(C, [&](long j) { return (double)(w ? gi[j] * w[j] : gi[j]) * ((xi[j] - m) * r); });
      const float a = (float)(s1 / C), c = (float)(s2 / C);
      float* di = dx + i * C;
      for (long j = 0; j < C; ++j) {
        float gw = w ? gi[j] * w[j] : gi[j];
        di[j] = r * (gw - a - ((xi[j] - m) * r) * c);
      }
    }
    if (acc) {
      if (dw)
        for (long j = 0; j < C; ++j) acc[j] += gi[j] * ((xi[j] - m) * r);
      if (db)
        for (long j = 0; j < C; ++j) acc[C + j] += gi[j];
    }
  });
}

// ---------------------------------------------------------------------------------------------- RoPE
void rope(float* out, const float* x, const float* cs, const float* sn, long B, long T, long H, long D, long R,
          bool interleaved, bool inverse) {
  const long half = R / 2;
  const float sgn = inverse ? -1.0f : 1.0f;
  const rope_fn row = isa_active()->rope;
  parallel_rows(B * T, 1, [&](long r0, long r1) {
    for (long bt = r0; bt < r1; ++bt) {
      const long t = bt % T;
      const float *c = cs + t * half, *s = sn + t * half;
      const float* xr = x + bt * H * D;
      float* orow = out + bt * H * D;
      if (row) {
        row(orow, xr, c, s, H, D, R, interleaved, sgn);
      } else {
        for (long h = 0; h < H; ++h) {
          const float* xi = xr + h * D;
          float* oi = orow + h * D;
          for (long i = 0; i < half; ++i) {
            const long i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
            const float a = xi[i0], b = xi[i1], si = sgn * s[i];
            oi[i0] = a * c[i] - b * si;
            oi[i1] = b * c[i] + a * si;
          }
        }
      }
      if (out != x && D > R)  // the heads' unrotated rest
        for (long h = 0; h < H; ++h) std::memcpy(orow + h * D + R, xr + h * D + R, (D - R) * sizeof(float));
    }
  });
}

// ---------------------------------------------------------------------------------------------- attention
// Causal attention drives the ISA's GEMM micro-kernel directly, one MR-row panel of queries (or keys) at a time, so
// each product stops at the causal diagonal (rounded up to a whole NR panel) instead of at the end of a row block.
// K and V are packed once per head, not once per block of rows (for GQA the packs are shared by a group's query heads
// in the backward). Every element is summed in a fixed order whatever the thread count: one (batch, head) or
// (batch, KV head) per task, with the same panels inside.
namespace {

constexpr long kAttKeyPanels = 8;
// Longest sequence whose Pᵀ / dSᵀ panels are read in place: a column strip of rows 4T bytes apart maps to few cache
// sets, and past this it thrashes L2 (T = 2048: bwd 60 ms per layer in place, 49 packed; T = 1024: 28 vs 30).
constexpr long kAttDirectMaxT = 1024;
thread_local Scratch t_att_k, t_att_v, t_att_q, t_att_o, t_att_a, t_att_s;

// The ISA's register tile for (mr x nr) of C (mr <= MR, nr <= NR): a full tile in place, a partial one through a padded
// copy (the same FMAs, as in the GEMM's edge path). A: an MR-wide k-major panel (k stride sa, default MR), or with
// `rowa` MR full rows read in place (row stride sa, the ISA's micro_rowa); B: an NR-wide panel, K of both.
void att_tile(const IsaKernels* isa, long K, const float* A, const float* B, float* C, long ldc, long mr, long nr,
              float alpha, float beta, long sa = 0, bool rowa = false) {
  if (!sa) sa = isa->MR;
  const auto micro = [&](float* c, long l) {
    if (rowa) isa->micro_rowa(K, A, sa, 0, nullptr, B, isa->NR, c, l, alpha, beta);
    else isa->micro(K, A, sa, B, isa->NR, c, l, alpha, beta);
  };
  if (mr == isa->MR && nr == isa->NR) {
    micro(C, ldc);
    return;
  }
  alignas(64) float t[32 * 32];
  if (beta != 0.0f)
    for (long r = 0; r < mr; ++r) std::memcpy(t + r * isa->NR, C + r * ldc, nr * sizeof(float));
  micro(t, isa->NR);
  for (long r = 0; r < mr; ++r) std::memcpy(C + r * ldc, t + r * isa->NR, nr * sizeof(float));
}

// Lines to pull toward the cache while att_row runs: for each of its tiles, the same tile of `rows` rows (row stride
// ld) at pf; for writing or for reading. The next query panel's rows of P: written by the forward's next att_row
// (a fresh 4 T^2 bytes per head, usually not cached: each store would wait for its line), read by the backward's
// softmax_bwd (P was written a whole forward ago). Measured on the Zen 3, 12 layers' P in turn, alternated with the
// build without it process by process (10 rounds): attention forward 5.5 -> 5.1 ms a layer, backward 11.0 -> 10.3.
struct AttAhead {
  const float* pf = nullptr;
  long rows = 0, ld = 0;
  bool write = false;
};
// The next query panel's rows of a T x T matrix whose panel at t0 starts at m (none after the last panel).
inline AttAhead next_rows(const float* m, long t0, long MR, long T, bool write) {
  if (t0 + MR >= T) return {};
  return {m + MR * T, std::min(MR, T - t0 - MR), T, write};
}

// C[0:mr, 0:n] = alpha * A-panel (K deep) x the B panels (each K x NR, `bps` apart, starting `boff` rows in) + beta C.
// With `ahead`, each tile first prefetches its counterpart there (columns < n only: every address stays inside P).
void att_row(const IsaKernels* isa, long K, const float* Ap, const float* Bp, long bps, long boff, float* C, long ldc,
             long mr, long n, float alpha, float beta, long sa = 0, bool rowa = false, const AttAhead& ahead = {}) {
  const long NR = isa->NR;
  for (long j = 0; j * NR < n; ++j) {
    for (long r = 0; r < ahead.rows; ++r)
      for (long c = 0; c < NR && j * NR + c < n; c += 16) {  // (the next rows are as long as these: n <= T)
        const float* p = ahead.pf + r * ahead.ld + j * NR + c;
        if (ahead.write) __builtin_prefetch(p, 1);
        else __builtin_prefetch(p, 0);
      }
    att_tile(isa, K, Ap, Bp + j * bps + boff * NR, C + j * NR, ldc, mr, std::min(NR, n - j * NR), alpha, beta, sa,
             rowa);
  }
}

// The A operand of a product over MR rows of a row-major matrix (row stride ld, K columns from src): read in place
// when the ISA has micro_rowa and the panel is whole (no padding rows to invent), else packed into `buf`.
struct RowsA {
  const float* a;
  long sa;
  bool rowa;
};
inline RowsA rows_a(const IsaKernels* isa, float* buf, const float* src, long ld, long mr, long K) {
  if (isa->micro_rowa && mr == isa->MR) return {src, ld, true};
  pack_panels(buf, isa->MR, src, ld, true, mr, K, isa->MR * K);
  return {buf, 0, false};
}

// Columns of query panel [t0, t0 + mr) that are computed: up to its last row's diagonal, rounded up to whole panels.
inline long att_cols(long t0, long mr, long NR, long T) { return std::min(T, (t0 + mr + NR - 1) / NR * NR); }
}  // namespace

namespace {
// The forward over B rows of T queries, S_b = past_b + T keys each. Without prefixes (pk null) row b's keys and values
// are rows [b S, b S + S) of k / v. With them, row b's first past_rows[b] keys and values are rows of pk[b] / pv[b]
// and the T after them rows [b T, b T + T) of k / v: each head's are gathered into one buffer first, so the panels
// packed from it hold the same values as from one contiguous k (the same bits).
void attention_fwd_impl(float* out, float* P, const float* q, const float* k, const float* v, long B, long T, long H,
                        long KV, long D, float scale, long window, long past, const float* const* pk,
                        const float* const* pv, const int32_t* past_rows) {
  const IsaKernels* isa = isa_active();
  const softmax_fn softmax = isa->softmax;
  const long rep = H / KV, ldq = H * D, ldk = KV * D, MR = isa->MR, NR = isa->NR;
  long Smax = past + T;
  if (past_rows)
    for (long b = 0; b < B; ++b) Smax = std::max(Smax, (long)past_rows[b] + T);
  const long npm = (Smax + NR - 1) / NR, dp = (D + NR - 1) / NR;  // key panels (at most), head-dim panels
  pool_run([&](int ith, int nth) {
    long b0, e0;
    pool_split(B * H, ith, nth, 1, &b0, &e0);
    if (b0 >= e0) return;
    float* Kt = t_att_k.get(npm * NR * D);  // Kᵀ as B of scores = Q Kᵀ: panel j = keys [jNR, jNR+NR), D deep
    float* Vc = t_att_v.get(dp * NR * Smax);  // V as B of O = P V: panel p = columns [pNR, pNR+NR), S deep
    float* Qp = t_att_q.get(MR * D);
    float* Pp = t_att_a.get(MR * Smax);
    float* Sbuf = P ? nullptr : t_att_s.get(MR * Smax);
    float* Kg = pk ? t_att_o.get(2 * Smax * D) : nullptr;  // gathered keys, then values, of one head (rows D apart)
    long packed_kv = -1;
    for (long bh = b0; bh < e0; ++bh) {
      const long b = bh / H, h = bh % H, kh = h / rep;
      const long pb = past_rows ? past_rows[b] : past, S = pb + T;  // keys: the cached ones, then this call's
      const float* qb = q + b * T * ldq + h * D;
      float* ob = out + b * T * ldq + h * D;
      if (packed_kv != b * KV + kh) {  // consecutive heads of a GQA group share K and V
        packed_kv = b * KV + kh;
        if (pk) {
          float* Vg = Kg + Smax * D;
          for (long t = 0; t < S; ++t) {
            const float* ks = t < pb ? pk[b] + t * ldk : k + (b * T + t - pb) * ldk;
            const float* vs = t < pb ? pv[b] + t * ldk : v + (b * T + t - pb) * ldk;
            std::memcpy(Kg + t * D, ks + kh * D, D * sizeof(float));
            std::memcpy(Vg + t * D, vs + kh * D, D * sizeof(float));
          }
          pack_panels(Kt, NR, Kg, D, true, S, D, NR * D);
          pack_panels(Vc, NR, Vg, D, false, D, S, NR * S);
        } else {
          pack_panels(Kt, NR, k + b * S * ldk + kh * D, ldk, true, S, D, NR * D);
          pack_panels(Vc, NR, v + b * S * ldk + kh * D, ldk, false, D, S, NR * S);
        }
      }
      for (long t0 = 0; t0 < T; t0 += MR) {
        const long mr = std::min(MR, T - t0), cols = att_cols(pb + t0, mr, NR, S);
        float* sc = P ? P + bh * T * T + t0 * T : Sbuf;  // (P only without a cache: S == T)
        const RowsA qa = rows_a(isa, Qp, qb + t0 * ldq, ldq, mr, D);
        const AttAhead ahead = P ? next_rows(sc, t0, MR, T, true) : AttAhead{};  // P's next rows (see AttAhead)
        att_row(isa, D, qa.a, Kt, NR * D, 0, sc, S, mr, cols, scale, 0.0f, qa.sa, qa.rowa, ahead);
        for (long r = 0; r < mr; ++r) {
          // Query t (absolute position) sees keys [s0, t]: s0 = 0, or t + 1 - window under a sliding window
          // (Mistral). The keys before s0 get probability exactly 0, so the backward needs no window of its own.
          const long t = pb + t0 + r, s0 = window > 0 && t + 1 > window ? t + 1 - window : 0;
          float* row = sc + r * S;
          softmax(row + s0, t + 1 - s0, cols - s0);
          if (s0 > 0) std::memset(row, 0, s0 * sizeof(float));
        }
        const RowsA pa = rows_a(isa, Pp, sc, S, mr, cols);
        att_row(isa, cols, pa.a, Vc, NR * S, 0, ob + t0 * ldq, ldq, mr, D, 1.0f, 0.0f, pa.sa, pa.rowa);
      }
    }
  });
}
}  // namespace

void attention_fwd(float* out, float* P, const float* q, const float* k, const float* v, long B, long T, long H,
                   long KV, long D, float scale, long window, long past) {
  attention_fwd_impl(out, P, q, k, v, B, T, H, KV, D, scale, window, past, nullptr, nullptr, nullptr);
}

void attention_fwd_rows(float* out, const float* q, const float* k, const float* v, const float* const* pk,
                        const float* const* pv, const int32_t* past, long B, long T, long H, long KV, long D,
                        float scale, long window) {
  attention_fwd_impl(out, nullptr, q, k, v, B, T, H, KV, D, scale, window, 0, pk, pv, past);
}

void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* P, long B, long T, long H, long KV, long D, float scale) {
  const IsaKernels* isa = isa_active();
  const softmax_bwd_fn softmax_bwd = isa->softmax_bwd;
  const long rep = H / KV, ldq = H * D, ldk = KV * D, MR = isa->MR, NR = isa->NR;
  const long np = (T + NR - 1) / NR, dp = (D + NR - 1) / NR;
  pool_run([&](int ith, int nth) {
    long b0, e0;
    pool_split(B * KV, ith, nth, 1, &b0, &e0);
    if (b0 >= e0) return;
    float* Vt = t_att_v.get(np * NR * D);  // Vᵀ as B of dP = dO Vᵀ
    float* Kc = t_att_k.get(dp * NR * T);  // K as B of dQ = dS K
    float* Qc = t_att_q.get(dp * NR * T);  // Q as B of dK = dSᵀ Q
    float* Oc = t_att_o.get(dp * NR * T);  // dO as B of dV = Pᵀ dO
    float* Ap = t_att_a.get(MR * std::max(D, kAttKeyPanels * T));  // the A panels of the product at hand
    float* dS = t_att_s.get(T * T);        // the head's dS, row-major (rows: queries)
    for (long bk = b0; bk < e0; ++bk) {
      const long b = bk / KV, kh = bk % KV;
      float* dkb = dk + b * T * ldk + kh * D;
      float* dvb = dv + b * T * ldk + kh * D;
      pack_panels(Vt, NR, v + b * T * ldk + kh * D, ldk, true, T, D, NR * D);
      pack_panels(Kc, NR, k + b * T * ldk + kh * D, ldk, false, D, T, NR * T);
      for (long h = kh * rep; h < (kh + 1) * rep; ++h) {
        const float* qb = q + b * T * ldq + h * D;
        const float* dob = dout + b * T * ldq + h * D;
        float* dqb = dq + b * T * ldq + h * D;
        const float* pb = P + (b * H + h) * T * T;
        const float beta = h == kh * rep ? 0.0f : 1.0f;  // dK, dV: the group's first head writes, the others add
        pack_panels(Qc, NR, qb, ldq, false, D, T, NR * T);
        pack_panels(Oc, NR, dob, ldq, false, D, T, NR * T);
        // Query panels: dS = softmax_bwd(dO Vᵀ), dQ = scale dS K, both up to the diagonal.
        for (long t0 = 0; t0 < T; t0 += MR) {
          const long mr = std::min(MR, T - t0), cols = att_cols(t0, mr, NR, T);
          float* dSr = dS + t0 * T;
          const RowsA oa = rows_a(isa, Ap, dob + t0 * ldq, ldq, mr, D);
          att_row(isa, D, oa.a, Vt, NR * D, 0, dSr, T, mr, cols, 1.0f, 0.0f, oa.sa, oa.rowa,
                  next_rows(pb + t0 * T, t0, MR, T, false));  // P's next rows (see AttAhead)
          for (long r = 0; r < mr; ++r) softmax_bwd(dSr + r * T, pb + (t0 + r) * T, t0 + r + 1, cols);
          const RowsA sa = rows_a(isa, Ap, dSr, T, mr, cols);
          att_row(isa, cols, sa.a, Kc, NR * T, 0, dqb + t0 * ldq, ldq, mr, D, scale, 0.0f, sa.sa, sa.rowa);
        }
        // Key panels [s0, s0 + mr): the queries that see them are s0.. T - 1 (P and dS are 0 above the diagonal, and
        // every entry read here was written by the query panels above). Pᵀ and dSᵀ are k-major already: full groups of
        // kAttKeyPanels panels are read in place (rows T apart) up to kAttDirectMaxT, the others are packed.
        // Each panel's product starts at its own diagonal.
        for (long sg = 0; sg < T; sg += kAttKeyPanels * MR) {
          const long w = std::min(kAttKeyPanels * MR, T - sg), kg = T - sg;
          for (int which = 0; which < 2; ++which) {
            const float* src = (which ? dS : pb);
            const bool direct = w == kAttKeyPanels * MR && T <= kAttDirectMaxT;
            if (!direct) pack_panels(Ap, MR, src + sg * T + sg, T, false, w, kg, MR * kg);
            for (long s0 = sg; s0 < sg + w; s0 += MR) {
              const float* a = direct ? src + s0 * T + s0 : Ap + (s0 - sg) / MR * MR * kg + (s0 - sg) * MR;
              const long mr = std::min(MR, T - s0), sa = direct ? T : 0;
              if (which == 0) att_row(isa, T - s0, a, Oc, NR * T, s0, dvb + s0 * ldk, ldk, mr, D, 1.0f, beta, sa);
              else att_row(isa, T - s0, a, Qc, NR * T, s0, dkb + s0 * ldk, ldk, mr, D, scale, beta, sa);
            }
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------- activations
namespace {
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
constexpr float INV_SQRT2 = 0.7071067811865476f;
constexpr long EW_CHUNK = 1024;

// sig[i] = 1 / (1 + exp(-g[i])) using the ISA's vector exp.
void sigmoid_chunk(float* sig, const float* g, long n, const IsaKernels* isa) {
  for (long i = 0; i < n; ++i) sig[i] = -g[i];
  isa->expsum(sig, n, 0.0f);
  for (long i = 0; i < n; ++i) sig[i] = 1.0f / (1.0f + sig[i]);
}
}  // namespace

void act_fwd(float* out, const float* x, long n, int kind) {
  const IsaKernels* isa = isa_active();
  parallel_rows(n, EW_CHUNK, [&](long b, long e) {
    float sig[EW_CHUNK];
    for (long c = b; c < e; c += EW_CHUNK) {
      const long len = std::min(EW_CHUNK, e - c);
      const float* xi = x + c;
      float* oi = out + c;
      switch (kind) {
        case ACT_RELU:
          for (long i = 0; i < len; ++i) oi[i] = xi[i] > 0.0f ? xi[i] : 0.0f;
          break;
        case ACT_GELU:
          for (long i = 0; i < len; ++i) oi[i] = 0.5f * xi[i] * (1.0f + std::erf(xi[i] * INV_SQRT2));
          break;
        case ACT_GELU_TANH:
          for (long i = 0; i < len; ++i) {
            const float u = SQRT_2_OVER_PI * (xi[i] + 0.044715f * xi[i] * xi[i] * xi[i]);
            oi[i] = 0.5f * xi[i] * (1.0f + std::tanh(u));
          }
          break;
        default:
          sigmoid_chunk(sig, xi, len, isa);
          for (long i = 0; i < len; ++i) oi[i] = xi[i] * sig[i];
      }
    }
  });
}

void act_bwd(float* dx, const float* dout, const float* x, long n, int kind) {
  const IsaKernels* isa = isa_active();
  parallel_rows(n, EW_CHUNK, [&](long b, long e) {
    float sig[EW_CHUNK];
    for (long c = b; c < e; c += EW_CHUNK) {
      const long len = std::min(EW_CHUNK, e - c);
      const float *xi = x + c, *gi = dout + c;
      float* di = dx + c;
      switch (kind) {
        case ACT_RELU:
          for (long i = 0; i < len; ++i) di[i] = xi[i] > 0.0f ? gi[i] : 0.0f;
          break;
        case ACT_GELU:
          for (long i = 0; i < len; ++i) {
            const float cdf = 0.5f * (1.0f + std::erf(xi[i] * INV_SQRT2));
            const float pdf = 0.3989422804014327f * std::exp(-0.5f * xi[i] * xi[i]);
            di[i] = gi[i] * (cdf + xi[i] * pdf);
          }
          break;
        case ACT_GELU_TANH:
          for (long i = 0; i < len; ++i) {
            const float x3 = xi[i] * xi[i] * xi[i];
            const float th = std::tanh(SQRT_2_OVER_PI * (xi[i] + 0.044715f * x3));
            const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * xi[i] * xi[i]);
            di[i] = gi[i] * (0.5f * (1.0f + th) + 0.5f * xi[i] * (1.0f - th * th) * du);
          }
          break;
        default:
          sigmoid_chunk(sig, xi, len, isa);
          for (long i = 0; i < len; ++i) di[i] = gi[i] * sig[i] * (1.0f + xi[i] * (1.0f - sig[i]));
      }
    }
  });
}

void swiglu_fwd(float* out, const float* g, const float* u, long n) {
  const IsaKernels* isa = isa_active();
  if (isa->swiglu_fwd) {
    parallel_rows(n, EW_CHUNK, [&](long b, long e) { isa->swiglu_fwd(out + b, g + b, u + b, e - b); });
    return;
  }
  parallel_rows(n, EW_CHUNK, [&](long b, long e) {
    float sig[EW_CHUNK];
    for (long c = b; c < e; c += EW_CHUNK) {
      const long len = std::min(EW_CHUNK, e - c);
      sigmoid_chunk(sig, g + c, len, isa);
      for (long i = 0; i < len; ++i) out[c + i] = (g[c + i] * sig[i]) * u[c + i];
    }
  });
}

void swiglu_bwd(float* dg, float* du, const float* dout, const float* g, const float* u, long n) {
  const IsaKernels* isa = isa_active();
  if (isa->swiglu_bwd) {
    parallel_rows(n, EW_CHUNK, [&](long b, long e) {
      isa->swiglu_bwd(dg ? dg + b : nullptr, du ? du + b : nullptr, dout + b, g + b, u + b, e - b);
    });
    return;
  }
  parallel_rows(n, EW_CHUNK, [&](long b, long e) {
    float sig[EW_CHUNK];
    for (long c = b; c < e; c += EW_CHUNK) {
      const long len = std::min(EW_CHUNK, e - c);
      sigmoid_chunk(sig, g + c, len, isa);
      for (long i = 0; i < len; ++i) {
        const float gi = g[c + i], s = sig[i], d = dout[c + i];
        if (du) du[c + i] = d * (gi * s);
        if (dg) dg[c + i] = d * u[c + i] * s * (1.0f + gi * (1.0f - s));
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------- cross-entropy
void xent(float* loss, float* dlogits, const float* logits, const int32_t* targets, long M, long V, int32_t ignore,
          float scale) {
  const IsaKernels* isa = isa_active();
  const xent_row_fn xent_row = isa->xent_row;
  pool_run([&](int ith, int nth) {
    long r0, r1;
    pool_split(M, ith, nth, 1, &r0, &r1);
    std::vector<float> tmp;
    if (!dlogits) tmp.resize(V);
    for (long i = r0; i < r1; ++i) {
      const float* li = logits + i * V;
      const int32_t t = targets[i];
      float* ei = dlogits ? dlogits + i * V : tmp.data();
      if (t == ignore) {
        loss[i] = 0.0f;
        if (dlogits) std::memset(ei, 0, V * sizeof(float));
        continue;
      }
      const float lt = li[t];
      loss[i] = xent_row(ei, li, V, dlogits ? scale : 0.0f) - lt;
      if (dlogits) ei[t] -= scale;
    }
  });
}

// ---------------------------------------------------------------------------------------------- AdamW
long adamw(float* p, const float* g, float* m, float* v, long n, float lr, float b1, float b2, float eps, float wd,
           long step) {
  const IsaKernels* isa = isa_active();
  const nonfinite_fn nonfinite = isa->nonfinite;
  const adamw_fn update = isa->adamw;
  // Check every gradient before touching anything, so a NaN leaves the parameters and moments as they were.
  std::vector<long> bad(pool_threads() + 1, 0);
  pool_run([&](int ith, int nth) {
    long b, e;
    pool_split(n, ith, nth, 16, &b, &e);
    if (e > b) bad[ith] = nonfinite(g + b, e - b);
  });
  const long nbad = std::accumulate(bad.begin(), bad.end(), 0L);
  if (nbad) return nbad;
  const double bc1 = 1.0 - std::pow((double)b1, (double)step), bc2 = 1.0 - std::pow((double)b2, (double)step);
  const float k[8] = {1.0f - lr * wd, b1, 1.0f - b1, b2, 1.0f - b2, (float)(lr / bc1), (float)std::sqrt(bc2), eps};
  parallel_rows(n, 1024, [&](long b, long e) { update(p + b, g + b, m + b, v + b, e - b, k); });
  return 0;
}

// ---------------------------------------------------------------------------------------------- elementwise, masks
void ew(int op, float* out, const float* a, const float* b, long n, float alpha) {
  parallel_rows(n, 4096, [&](long s, long e) {
    switch (op) {
      case EW_ADD:
        for (long i = s; i < e; ++i) out[i] = a[i] + b[i];
        break;
      case EW_SUB:
        for (long i = s; i < e; ++i) out[i] = a[i] - b[i];
        break;
      case EW_MUL:
        for (long i = s; i < e; ++i) out[i] = a[i] * b[i];
        break;
      case EW_AXPY:
        for (long i = s; i < e; ++i) out[i] += alpha * a[i];
        break;
      case EW_SCALE:
        for (long i = s; i < e; ++i) out[i] = alpha * a[i];
        break;
      default:
        for (long i = s; i < e; ++i) out[i] += a[i] * b[i];
    }
  });
}

void row_logsumexp(double* out, int32_t* argmax, const float* x, long M, long V) {
  const IsaKernels* isa = isa_active();
  parallel_rows(M, 1, [&](long r0, long r1) {
    std::vector<float> e(V);
    for (long i = r0; i < r1; ++i) {
      const float* r = x + i * V;
      float mx = -INFINITY;
      int32_t am = 0;
      bool nan = false;
      for (long j = 0; j < V; ++j) {
        if (r[j] > mx) {  // the first maximum; NaNs never win
          mx = r[j];
          am = (int32_t)j;
        }
        nan |= r[j] != r[j];
      }
      std::memcpy(e.data(), r, V * sizeof(float));
      // (the vector exps clamp a NaN input, so a NaN logit is passed on here)
      out[i] = nan ? NAN : std::log((double)isa->expsum(e.data(), V, mx)) + (double)mx;
      argmax[i] = am;
    }
  });
}

void col_sumsq(double* out, const float* x, long n, long cols) {
  // Columns in chunks of 64 per task; each column's sum runs over the rows in order (thread-count invariant).
  parallel_rows(cols, 64, [&](long c0, long c1) {
    for (long i = 0; i < n; ++i) {
      const float* r = x + i * cols;
      for (long j = c0; j < c1; ++j) out[j] += (double)r[j] * (double)r[j];
    }
  });
}

void masked_scale_add(float* out, const float* base, const float* x, const uint8_t* mask, float s, long n) {
  parallel_rows(n, 4096, [&](long b, long e) {
    if (base) {
      for (long i = b; i < e; ++i) out[i] = mask[i] ? base[i] + s * x[i] : base[i] + 0.0f;
    } else {
      for (long i = b; i < e; ++i) out[i] = mask[i] ? s * x[i] : 0.0f;
    }
  });
}

void mask_apply(float* w, const uint8_t* mask, long n) {
  parallel_rows(n, 4096, [&](long s, long e) {
    for (long i = s; i < e; ++i)
      if (!mask[i]) w[i] = 0.0f;
  });
}

namespace {
// k smallest of scores[0..n) (ties: lower index first) get mask 0, the rest 1.
void prune_smallest(uint8_t* mask, const float* scores, long n, long k, std::vector<int32_t>& idx) {
  for (long i = 0; i < n; ++i) mask[i] = 1;
  if (k <= 0) return;
  if (k >= n) {
    std::memset(mask, 0, n);
    return;
  }
  idx.resize(n);
  std::iota(idx.begin(), idx.end(), 0);
  auto less = [&](int32_t a, int32_t b) { return scores[a] < scores[b] || (scores[a] == scores[b] && a < b); };
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), less);
  for (long i = 0; i < k; ++i) mask[idx[i]] = 0;
}
}  // namespace

void topk_prune(uint8_t* mask, const float* scores, long rows, long cols, long k, bool per_row) {
  if (!per_row) {
    std::vector<int32_t> idx;
    prune_smallest(mask, scores, rows * cols, k, idx);
    return;
  }
  parallel_rows(rows, 1, [&](long r0, long r1) {
    std::vector<int32_t> idx;
    for (long r = r0; r < r1; ++r) prune_smallest(mask + r * cols, scores + r * cols, cols, k, idx);
  });
}

void nm_keep(uint8_t* mask, const float* scores, long rows, long cols, long n, long m) {
  parallel_rows(rows, 1, [&](long r0, long r1) {
    std::vector<int32_t> idx;
    for (long r = r0; r < r1; ++r)
      for (long g = 0; g < cols; g += m)
        prune_smallest(mask + r * cols + g, scores + r * cols + g, m, m - n, idx);
  });
}

// ---------------------------------------------------------------------------------------------- linear algebra
namespace {
// out (m x m, row stride ldo) = the inverse of the lower-triangular m x m block at L (row stride ldl), by substitution
// with double accumulation; zeros above the diagonal.
void invert_lower_small(float* out, long ldo, const float* L, long ldl, long m) {
  double x[64];
  for (long j = 0; j < m; ++j) {
    for (long i = 0; i < j; ++i) out[i * ldo + j] = 0.0f;
    // Solve L x = e_j; x[i] = 0 for i < j.
    for (long i = j; i < m; ++i) {
      double s = i == j ? 1.0 : 0.0;
      const float* li = L + i * ldl;
      for (long p = j; p < i; ++p) s -= li[p] * x[p];
      x[i] = s / li[i];
      out[i * ldo + j] = (float)x[i];
    }
  }
}
// Scratch for Cholesky's panel product, kept between calls (grown, never shrunk).
float* panel_scratch(size_t n) {
  static thread_local Scratch b;
  return b.get(n);
}
}  // namespace

long cholesky(float* a, long n) {
  constexpr long NB = 64;
  for (long kb = 0; kb < n; kb += NB) {
    const long nb = std::min(NB, n - kb);
    // Factor the diagonal block (unblocked, row-oriented; dot products accumulated in double).
    for (long i = kb; i < kb + nb; ++i) {
      for (long j = kb; j <= i; ++j) {
        double s = a[i * n + j];
        for (long p = kb; p < j; ++p) s -= (double)a[i * n + p] * a[j * n + p];
        if (i == j) {
          if (!(s > 0.0) || !std::isfinite(s)) return j + 1;
          a[i * n + i] = (float)std::sqrt(s);
        } else {
          a[i * n + j] = (float)(s / a[j * n + j]);
        }
      }
    }
    const long rest = n - kb - nb;
    if (rest <= 0) break;
    // Panel: L21 = A21 · L11^{-T}, with L11^{-1} from the substitution below (double accumulation) and one GEMM.
    float* A21 = a + (kb + nb) * n + kb;
    const float* L11 = a + kb * n + kb;
    float inv[NB * NB];
    invert_lower_small(inv, NB, L11, n, nb);
    float* tmp = panel_scratch(rest * nb);
    gemm(gargs(tmp, nb, A21, n, false, inv, NB, true, rest, nb, nb, 1.0f, 0.0f));
    for (long r = 0; r < rest; ++r) std::memcpy(A21 + r * n, tmp + r * nb, nb * sizeof(float));
    // Trailing update: A22 -= L21 · L21^T (the full square; only the lower triangle is used later).
    gemm(gargs(a + (kb + nb) * n + kb + nb, n, A21, n, false, A21, n, true, rest, rest, nb, -1.0f, 1.0f));
  }
  for (long i = 0; i < n; ++i)
    for (long j = i + 1; j < n; ++j) a[i * n + j] = 0.0f;
  return 0;
}

// Blocked: the diagonal blocks inverted by substitution (double accumulation, in parallel), then block row by block
// row X[i, 0:i] = -X_ii (L[i, 0:i] X[0:i, 0:i]) with two GEMMs (the strictly upper part of X is zero, so the product
// with the whole leading square is exact) - LAPACK's strtri organisation, 2n^3/3 flops on the GEMM path instead of
// n^3/3 scalar ones (n = 3072 on 2 cores: 3.3 s -> 0.09 s).
void trtri_lower(float* out, const float* L, long n) {
  constexpr long NB = 64;
  const long nblk = (n + NB - 1) / NB;
  std::memset(out, 0, sizeof(float) * n * n);
  parallel_rows(nblk, 1, [&](long b0, long b1) {
    for (long b = b0; b < b1; ++b) {
      const long o = b * NB;
      invert_lower_small(out + o * n + o, n, L + o * n + o, n, std::min(NB, n - o));
    }
  });
  std::vector<float> T(NB * n);
  for (long b = 1; b < nblk; ++b) {
    const long o = b * NB, m = std::min(NB, n - o);
    gemm(gargs(T.data(), o, L + o * n, n, false, out, n, false, m, o, o, 1.0f, 0.0f));  // L[i, 0:i] X[0:i, 0:i]
    gemm(gargs(out + o * n, n, out + o * n + o, n, false, T.data(), o, false, m, o, m, -1.0f, 0.0f));
  }
}

double sparsegpt_obs(float* W1, float* Err1, uint8_t* mask1, const float* U, long ldu, const float* d, long rows,
                     long bs, long nm_n, long nm_m) {
  const IsaKernels* isa = isa_active();
  std::vector<double> part(rows * bs);  // loss terms, summed in the column-major order of the reference loop
  parallel_rows(rows, 1, [&](long r0, long r1) {
    std::vector<double> vals(nm_m > 0 ? nm_m : 1);
    std::vector<long> idx(vals.size());
    for (long r = r0; r < r1; ++r) {
      float* w = W1 + r * bs;
      uint8_t* mk = mask1 + r * bs;
      for (long i = 0; i < bs; ++i) {
        if (nm_m > 0 && i % nm_m == 0) {
          for (long j = 0; j < nm_m; ++j) {
            const double wv = w[i + j], dv = d[i + j];
            vals[j] = (wv * wv) / (dv * dv);
            idx[j] = j;
          }
          std::sort(idx.begin(), idx.end(),
                    [&](long a, long b) { return vals[a] < vals[b] || (vals[a] == vals[b] && a < b); });
          for (long j = 0; j < nm_m; ++j) mk[i + j] = 1;
          for (long j = 0; j < nm_m - nm_n; ++j) mk[i + idx[j]] = 0;
        }
        const float wi = w[i], q = mk[i] ? wi : 0.0f;
        const double di = d[i], diff = (double)wi - (double)q, err = diff / di;
        part[i * rows + r] = diff * diff / (di * di) / 2;
        w[i] = q;
        Err1[r * bs + i] = (float)err;
        if (err != 0.0) {
          const float* h = U + i * ldu;
          if (isa->obs_update) {
            isa->obs_update(w + i + 1, h + i + 1, err, bs - i - 1);
          } else {
            for (long j = i + 1; j < bs; ++j) w[j] = (float)((double)w[j] - err * (double)h[j]);
          }
        }
      }
    }
  });
  double loss = 0;
  for (double v : part) loss += v;
  return loss;
}

}  // namespace perp
