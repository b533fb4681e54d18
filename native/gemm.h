// SGEMM, row-major: C(M x N) = alpha * op(A)(M x K) * op(B)(K x N) + beta * C. B may be f32, bf16 or f16
// (frozen weights kept in their file dtype, widened while packing). BLIS-style packing + per-ISA micro-kernel.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace perp {

enum BType { B_F32 = 0, B_BF16 = 1, B_F16 = 2 };

struct GemmArgs {
  float* C;
  long ldc;
  const float* A;
  long lda;
  bool transA;
  const void* B;
  int btype;
  long ldb;
  bool transB;
  long M, N, K;
  float alpha, beta;
  // Optional second product appended along K (K2 > 0): C = alpha (op(A) op(B) + op(A2) op(B2)) + beta C, with
  // op(A2): M x K2 and op(B2): K2 x N (f32). It joins the last K block, so C is not read or written an extra time
  // (the LoRA term x·Aᵀ·Bᵀ of a linear layer rides along with x·Wᵀ).
  const float* A2 = nullptr;
  long lda2 = 0;
  bool transA2 = false;
  const float* B2 = nullptr;
  long ldb2 = 0;
  bool transB2 = false;
  long K2 = 0;
  // Optional op(B) packed ahead of time by gemm_pack_b (a frozen weight, packed once instead of at every call). It is
  // used only when it matches this call (ISA, blocking, K, N, K2); otherwise B is packed as usual. Its gap rows for the
  // second product are scratch, written by the call.
  float* packed = nullptr;
  long packed_len = 0;
  // A column block of a multi-threaded call (packed_ncols > 0): columns [packed_n0, packed_n0 + N) of a packed op(B)
  // with packed_ncols columns in all (packed_n0 a multiple of the ISA's NR).
  long packed_n0 = 0, packed_ncols = 0;
};

// Multi-threaded over the pool (each thread owns a block of C; per-element results do not depend on the split).
void gemm(const GemmArgs& g);
// Single-threaded, for use inside kernels that are already split across the pool.
void gemm_st(const GemmArgs& g);

// Cache blocking (KC x NC panels of B, MCP x MR rows of A, B panels in column groups of JG); values > 0 replace the
// current ones (benchmarking hook, also PERP_KC / PERP_NC / PERP_MCP / PERP_JG); the values in force are written back.
void gemm_blocking(long* kc, long* nc, long* mcp, long* jg);
// Largest blockings accepted (gemmBlocking refuses more, PERP_* values are clamped): they keep the per-thread pack
// buffers (MR x MCP x KC and NC x KC floats) to a few hundred MB.
constexpr long kMaxKC = 4096, kMaxNC = 16384, kMaxMCP = 512, kMaxJG = 1024;
// Pre-packed op(B) (K x N; from B as stored, transposed when transB): the panels every call would pack, in the active
// ISA's layout and the current blocking, with k2 spare rows per panel of the last K block for a second product.
// gemm_pack_size gives the length in floats (a header included); gemm_pack_b fills dst.
long gemm_pack_size(long K, long N, long k2);
void gemm_pack_b(float* dst, const void* B, int btype, long ldb, bool transB, long K, long N, long k2);
// The active ISA's packer (isa.h's pack_fn contract, f32 source), for kernels that drive the micro-kernel themselves.
void pack_panels(float* dst, int W, const float* src, long ld, bool trans, long w, long kc, long ps);
// Number of GEMMs that used a pre-packed B (a diagnostic for tests and benchmarks).
long gemm_packed_count();
// Number of GEMMs that ran the cooperative shared-B path (a diagnostic for tests and benchmarks).
long gemm_coop_count();
// Number of GEMMs split by columns with A's rows read in place (run_cols; a diagnostic for tests).
long gemm_cols_count();

// A growable per-thread work buffer on a 64-byte boundary (packed panels, attention tiles): the micro-kernels' vector
// loads then never straddle two cache lines. get(n) keeps nothing of the old contents when it grows.
struct Scratch {
  float* buf = nullptr;
  size_t cap = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(buf); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(buf);
      buf = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
      if (!buf) {
        cap = 0;
        throw std::bad_alloc();
      }
      cap = n;
    }
    return buf;
  }
};

float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);

}  // namespace perp
