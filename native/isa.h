// Per-ISA kernel table: the only code compiled with AVX2/AVX-512 target attributes (gemm_*.cc).
// Those files are C-style (no STL, no shared inline code) so no ISA-specific instantiation can leak into other TUs.
#pragma once
#include <cstddef>

namespace perp {

// C(MR x NR, row stride ldc) = alpha * sum_k A[k*sa + i] * B[k*sb + j] + beta * C   (beta == 0: C is not read).
// Packed panels have sa = MR, sb = NR; an operand already in that layout (A^T or B row-major) is read in place.
// Rounding contract shared by every ISA and by the edge path: c = fma(beta, c_old, alpha * acc).
typedef void (*micro_fn)(long K, const float* A, long sa, const float* B, long sb, float* C, long ldc, float alpha,
                         float beta);
// The same tile with A's first K values per row read in place from MR rows of a row-major matrix (row i at
// A + i * lda, element k at [k]), then K2 more from a k-major MR-wide panel A2 (k stride MR; none when K2 == 0), B
// running on over K + K2 rows. The same FMAs in the same order as micro_fn over the packed panel, so the same bits.
typedef void (*micro_rows_fn)(long K, const float* A, long lda, long K2, const float* A2, const float* B, long sb,
                              float* C, long ldc, float alpha, float beta);
// x[i] = exp(x[i] - sub); returns the sum of the new x (fixed lane order for a given ISA).
typedef float (*expsum_fn)(float* x, long n, float sub);
// Attention rows: x[0, len) = softmax(x[0, len)), x[len, n) = 0 (the causal tail).
typedef void (*softmax_fn)(float* x, long len, long n);
// Softmax backward: d = sum_{j<len} ds[j] p[j]; ds[j] = p[j] (ds[j] - d) for j < len, 0 for len <= j < n.
typedef void (*softmax_bwd_fn)(float* ds, const float* p, long len, long n);
// One cross-entropy row: e[j] = scale * softmax(l)[j] (scale == 0: e is scratch, left unnormalised);
// returns logsumexp(l). e may equal l.
typedef float (*xent_row_fn)(float* e, const float* l, long n, float scale);

// Packs w columns into ceil(w/W) panels of width W (= MR for A, NR for B), panel p at dst + p*ps (ps >= W*kc: a
// panel may have room for more k rows, packed by a second call at dst + kc*W): panel[k*W + c] = element (pW + c, k),
// zero past w; k < kc. trans=false: element (c, k) is at src[k*ld + c] (a strided copy, swept row by row across all
// panels so memory is read sequentially); trans=true: at src[c*ld + k] (a transpose). dtype: 0 f32, 1 bf16, 2 f16
// (widened exactly). nullptr in a table: the portable packer in gemm.cc.
typedef void (*pack_fn)(float* dst, int W, const void* src, int dtype, long ld, bool trans, long w, long kc, long ps);

// Inner-product GEMM for A (M x K) and B (N x K), both row-major along K (C = A B^T, the x W^T shape) with small N:
// C[i*ldc + j] = fma(beta, C, alpha * sum_k A[i*lda + k] * B[j*ldb + k]); beta == 0: C is not read. No packing.
// Each element is summed the same way wherever it lies (bitwise independent of how rows are split).
typedef void (*dot_fn)(long M, long N, long K, const float* A, long lda, const float* B, long ldb, float* C, long ldc,
                       float alpha, float beta);

// AdamW over n elements with precomputed coefficients k = {decay, b1, 1-b1, b2, 1-b2, step_size, sqrt(bc2), eps}:
// p *= decay; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step_size m / (sqrt(v)/sqrt(bc2) + eps).
// Separate multiplies and adds in this order on every path (no FMA contraction), so every ISA gives the same bits.
typedef void (*adamw_fn)(float* p, const float* g, float* m, float* v, long n, const float* k);
// Number of non-finite values in x[0, n).
typedef long (*nonfinite_fn)(const float* x, long n);

// Runs an FMA-throughput loop of `iters` iterations; returns the number of floating-point operations done.
typedef double (*peak_fn)(long iters, float* sink);
// SwiGLU over n elements, s = 1 / (1 + exp(-g)) with the ISA's exp: out = (g s) u; backward du = d (g s) (du may be
// null), dg = ((d u) s)(1 + g (1 - s)) (dg may be null). Separate multiplies and adds in this order, so the bits are
// those of the generic loop in kernels.cc over the same exp.
typedef void (*swiglu_fwd_fn)(float* out, const float* g, const float* u, long n);
typedef void (*swiglu_bwd_fn)(float* dg, float* du, const float* dout, const float* g, const float* u, long n);

// SparseGPT's OBS row update: w[j] = float(double(w[j]) - e * double(h[j])) for j < n, a separate multiply and subtract
// in double (no FMA), so every ISA gives the bits of the scalar loop.
typedef void (*obs_update_fn)(float* w, const float* h, double e, long n);

// RoPE over one token's H heads of D values (head h at x + h*D), the first R of each rotated by the angles (c, s)
// (R/2 each), s scaled by sgn (-1: the inverse rotation); the rest of each head is left as it was (out may be x).
// Pairs (2i, 2i+1) when interleaved, else (i, i + R/2); per pair a' = a c - b s', b' = b c + a s' with separate
// multiplies and adds, so every ISA gives the bits of the generic loop in kernels.cc.
typedef void (*rope_fn)(float* out, const float* x, const float* c, const float* s, long H, long D, long R,
                        bool interleaved, float sgn);

struct IsaKernels {
  const char* name;
  int MR, NR;
  micro_fn micro;
  int MR16;          // rows of the narrow micro-kernel (MR16 x 16, for N <= 16); 0 with micro16 == nullptr
  // nullptr: the main micro-kernel handles narrow N too (padded). An ISA whose main tile is 16 wide may list it here
  // as well, which enables the transposed-output route for A^T products with M <= 16 (gemm.cc, gemm_tout).
  micro_fn micro16;
  pack_fn pack;
  dot_fn dot;  // nullptr: not provided (the packed GEMM handles every shape)
  expsum_fn expsum;
  // Row kernels below: nullptr in an ISA file means the scalar one (isa_active() returns the table filled in).
  softmax_fn softmax;
  softmax_bwd_fn softmax_bwd;
  xent_row_fn xent_row;
  adamw_fn adamw;
  nonfinite_fn nonfinite;
  peak_fn peak;
  // Fused elementwise kernels; nullptr: the generic loops in kernels.cc (over this table's expsum).
  swiglu_fwd_fn swiglu_fwd;
  swiglu_bwd_fn swiglu_bwd;
  // The main micro-kernel over a row-major A (see micro_rows_fn), for GEMMs and attention products whose A is
  // row-major: its rows are then never packed. nullptr: pack the rows (callers fall back to `pack` + `micro`).
  micro_rows_fn micro_rowa;
  // nullptr: the scalar loop in kernels.cc.
  obs_update_fn obs_update;
  rope_fn rope;  // nullptr: the generic loop in kernels.cc
};

enum Isa { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

const IsaKernels* isa_scalar();
const IsaKernels* isa_avx2();
const IsaKernels* isa_avx512();

// Active table (PERP_CPU or best supported); cpu_set returns false if the machine lacks the ISA.
const IsaKernels* isa_active();
int isa_active_id();
int isa_best_id();
bool isa_supported(int id);
bool isa_set(int id);

}  // namespace perp
