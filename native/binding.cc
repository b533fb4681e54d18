// The only N-API file: validates every argument (types, lengths against dims) and throws a JS TypeError/RangeError
// naming the op; kernels assume valid input. Buffers are caller-owned typed arrays, read without copying.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <napi.h>
#include <string>

#include "gemm.h"
#include "isa.h"
#include "kernels.h"
#include "pool.h"

using namespace perp;

namespace {

struct Args {
  const Napi::CallbackInfo& info;
  const char* op;

  [[noreturn]] void fail(const std::string& msg) const {
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": " + msg);
  }
  void need(size_t n) const {
    if (info.Length() < n) fail("expected " + std::to_string(n) + " arguments, got " + std::to_string(info.Length()));
  }
  bool isNull(size_t i) const { return i >= info.Length() || info[i].IsNull() || info[i].IsUndefined(); }

  long dim(size_t i, const char* name) const {
    if (i >= info.Length() || !info[i].IsNumber()) fail(std::string(name) + " must be a number");
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d != std::floor(d) || d > 9.0e15) fail(std::string(name) + " must be a non-negative integer");
    return (long)d;
  }
  double num(size_t i, const char* name) const {
    if (i >= info.Length() || !info[i].IsNumber()) fail(std::string(name) + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  }
  bool flag(size_t i) const { return i < info.Length() && info[i].ToBoolean().Value(); }

  template <typename T, napi_typedarray_type TT>
  T* typed(size_t i, const char* name, const char* tname, long need_len, bool nullable, bool exact) const {
    if (isNull(i)) {
      if (nullable) return nullptr;
      fail(std::string(name) + " is required");
    }
    return typed_value<T, TT>(info[i], name, tname, need_len, exact);
  }
  // The same checks on any value (an element of an array argument); `len_out` gets its length.
  template <typename T, napi_typedarray_type TT>
  T* typed_value(const Napi::Value& v, const std::string& name, const char* tname, long need_len, bool exact,
                 long* len_out = nullptr) const {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TT) fail(name + " must be a " + tname);
    auto a = v.As<Napi::TypedArray>();
    long len = (long)a.ElementLength();
    if (len_out) *len_out = len;
    if (exact ? len != need_len : len < need_len)
      fail(std::string(name) + " has length " + std::to_string(len) + ", expected " + (exact ? "" : "at least ") +
           std::to_string(need_len));
    return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }
  float* f32(size_t i, const char* name, long n, bool nullable = false) const {
    return typed<float, napi_float32_array>(i, name, "Float32Array", n, nullable, true);
  }
  uint8_t* u8(size_t i, const char* name, long n) const {
    return typed<uint8_t, napi_uint8_array>(i, name, "Uint8Array", n, false, true);
  }
  int32_t* i32(size_t i, const char* name, long n) const {
    return typed<int32_t, napi_int32_array>(i, name, "Int32Array", n, false, true);
  }
};

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args a{info, "gemm"};
  a.need(10);
  GemmArgs g;
  g.M = a.dim(3, "M");
  g.N = a.dim(4, "N");
  g.K = a.dim(5, "K");
  g.transA = a.flag(6);
  g.transB = a.flag(7);
  g.alpha = (float)a.num(8, "alpha");
  g.beta = (float)a.num(9, "beta");
  g.lda = a.isNull(11) ? (g.transA ? g.M : g.K) : a.dim(11, "lda");
  g.ldb = a.isNull(12) ? (g.transB ? g.K : g.N) : a.dim(12, "ldb");
  g.ldc = a.isNull(13) ? g.N : a.dim(13, "ldc");
  const long arows = g.transA ? g.K : g.M, acols = g.transA ? g.M : g.K;
  const long brows = g.transB ? g.N : g.K, bcols = g.transB ? g.K : g.N;
  if (g.lda < acols || g.ldb < bcols || g.ldc < g.N) a.fail("leading dimension smaller than the row length");
  auto span = [](long rows, long cols, long ld) { return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols; };
  g.C = a.typed<float, napi_float32_array>(0, "C", "Float32Array", span(g.M, g.N, g.ldc), false, false);
  g.A = a.typed<float, napi_float32_array>(1, "A", "Float32Array", span(arows, acols, g.lda), false, false);
  std::string bt = a.isNull(10) ? "f32" : info[10].ToString().Utf8Value();
  if (bt == "f32") {
    g.btype = B_F32;
    g.B = a.typed<float, napi_float32_array>(2, "B", "Float32Array", span(brows, bcols, g.ldb), false, false);
  } else if (bt == "bf16" || bt == "f16") {
    g.btype = bt == "bf16" ? B_BF16 : B_F16;
    g.B = a.typed<uint16_t, napi_uint16_array>(2, "B", "Uint16Array", span(brows, bcols, g.ldb), false, false);
  } else {
    a.fail("btype must be f32, bf16 or f16");
  }
  // Optional second product along K: args 14.. = A2, B2, K2, transA2, transB2 (packed leading dimensions).
  if (!a.isNull(14)) {
    g.K2 = a.dim(16, "K2");
    g.transA2 = a.flag(17);
    g.transB2 = a.flag(18);
    g.lda2 = g.transA2 ? g.M : g.K2;
    g.ldb2 = g.transB2 ? g.K2 : g.N;
    g.A2 = a.typed<float, napi_float32_array>(14, "A2", "Float32Array", g.M * g.K2, false, false);
    g.B2 = a.typed<float, napi_float32_array>(15, "B2", "Float32Array", g.K2 * g.N, false, false);
  }
  // Optional arg 19: op(B) pre-packed by gemmPack (ignored when it does not match this call).
  if (!a.isNull(19)) {
    g.packed = a.typed<float, napi_float32_array>(19, "packed", "Float32Array", 0, false, false);
    g.packed_len = (long)info[19].As<Napi::TypedArray>().ElementLength();
  }
  gemm(g);
  return info.Env().Undefined();
}

// Asks the kernel to back the 2 MiB-aligned interior of [p, p + bytes) with 2 MiB pages (transparent huge pages in
// "madvise" mode): pages first touched afterwards come 2 MiB at a time, so a GEMM streaming a large operand misses the
// TLB far less often (sgemm 4096^3 with its three matrices advised, alternated in one process: 90.7 -> 91.5% of peak).
// Returns the bytes advised: 0 off Linux, with PERP_HUGEPAGES=0, for a buffer without a whole aligned 2 MiB page, or
// if the kernel refuses.
static size_t advise_huge(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool off = std::getenv("PERP_HUGEPAGES") && std::string(std::getenv("PERP_HUGEPAGES")) == "0";
  if (off) return 0;
  constexpr uintptr_t kPage = 2u << 20;
  const uintptr_t b = ((uintptr_t)p + kPage - 1) & ~(kPage - 1), e = ((uintptr_t)p + bytes) & ~(kPage - 1);
  if (e <= b) return 0;
  return madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE) == 0 ? e - b : 0;
#else
  (void)p;
  (void)bytes;
  return 0;
#endif
}

// A zeroed Float32Array of n elements whose data starts on a 64-byte boundary (a cache line, an AVX-512 vector): V8
// puts large array buffers 16 bytes past a page start, so every vector load or store of such an array touched two cache
// lines. One ArrayBuffer 64 bytes larger than the data, viewed from its first aligned byte. Measured on llama768 steps
// (alternated in one process, arena buffers aligned vs not): full fwd+bwd 1.3-2.3% faster, PEFT 0.4-1.8%.
static Napi::Float32Array aligned_f32(Napi::Env env, size_t n) {
  constexpr size_t kAlign = 64;
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, n * sizeof(float) + kAlign);
  const size_t skip = (kAlign - (reinterpret_cast<uintptr_t>(ab.Data()) & (kAlign - 1))) & (kAlign - 1);
  return Napi::Float32Array::New(env, n, ab, skip);
}

// allocF32(n) -> a zeroed, 64-byte-aligned Float32Array (see aligned_f32).
Napi::Value AllocF32(const Napi::CallbackInfo& info) {
  Args a{info, "allocF32"};
  a.need(1);
  return aligned_f32(info.Env(), (size_t)a.dim(0, "n"));
}

// alignment(array) -> the largest power of two, up to 4096, that divides the address of the array's first element.
Napi::Value Alignment(const Napi::CallbackInfo& info) {
  Args a{info, "alignment"};
  a.need(1);
  if (!info[0].IsTypedArray()) a.fail("array must be a TypedArray");
  auto ta = info[0].As<Napi::TypedArray>();
  const uintptr_t p = reinterpret_cast<uintptr_t>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
  uintptr_t al = 1;
  while (al < 4096 && p % (al * 2) == 0) al *= 2;
  return Napi::Number::New(info.Env(), (double)al);
}

// adviseHuge(array) -> bytes advised (see advise_huge); for large buffers not yet written.
Napi::Value AdviseHuge(const Napi::CallbackInfo& info) {
  Args a{info, "adviseHuge"};
  a.need(1);
  if (!info[0].IsTypedArray()) a.fail("array must be a TypedArray");
  auto ta = info[0].As<Napi::TypedArray>();
  void* p = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Napi::Number::New(info.Env(), (double)advise_huge(p, ta.ByteLength()));
}

// gemmPack(B, K, N, transB, btype, k2) -> Float32Array: op(B) packed for later gemm calls (see gemm.h).
Napi::Value GemmPack(const Napi::CallbackInfo& info) {
  Args a{info, "gemmPack"};
  a.need(6);
  const long K = a.dim(1, "K"), N = a.dim(2, "N"), k2 = a.dim(5, "k2");
  const bool transB = a.flag(3);
  const long rows = transB ? N : K, cols = transB ? K : N, n = rows * cols;
  const std::string bt = a.isNull(4) ? "f32" : info[4].ToString().Utf8Value();
  const void* B = nullptr;
  int btype = B_F32;
  if (bt == "f32") {
    B = a.typed<float, napi_float32_array>(0, "B", "Float32Array", n, false, false);
  } else if (bt == "bf16" || bt == "f16") {
    btype = bt == "bf16" ? B_BF16 : B_F16;
    B = a.typed<uint16_t, napi_uint16_array>(0, "B", "Uint16Array", n, false, false);
  } else {
    a.fail("btype must be f32, bf16 or f16");
  }
  const long len = gemm_pack_size(K, N, k2);
  Napi::Float32Array out = aligned_f32(info.Env(), (size_t)len);
  advise_huge(out.Data(), (size_t)len * sizeof(float));  // before the packing below first touches it
  gemm_pack_b(out.Data(), B, btype, cols, transB, K, N, k2);
  return out;
}

Napi::Value BiasAdd(const Napi::CallbackInfo& info) {
  Args a{info, "biasAdd"};
  a.need(4);
  long M = a.dim(2, "M"), N = a.dim(3, "N");
  bias_add(a.f32(0, "y", M * N), a.f32(1, "b", N), M, N);
  return info.Env().Undefined();
}

Napi::Value BiasGrad(const Napi::CallbackInfo& info) {
  Args a{info, "biasGrad"};
  a.need(4);
  long M = a.dim(2, "M"), N = a.dim(3, "N");
  bias_grad(a.f32(0, "db", N), a.f32(1, "dy", M * N), M, N);
  return info.Env().Undefined();
}

Napi::Value RmsnormFwd(const Napi::CallbackInfo& info) {
  Args a{info, "rmsnormFwd"};
  a.need(7);
  long M = a.dim(4, "M"), C = a.dim(5, "C");
  rmsnorm_fwd(a.f32(0, "out", M * C), a.f32(1, "rstd", M, true), a.f32(2, "x", M * C), a.f32(3, "w", C), M, C,
              (float)a.num(6, "eps"));
  return info.Env().Undefined();
}

Napi::Value RmsnormBwd(const Napi::CallbackInfo& info) {
  Args a{info, "rmsnormBwd"};
  a.need(8);
  long M = a.dim(6, "M"), C = a.dim(7, "C");
  rmsnorm_bwd(a.f32(0, "dx", M * C, true), a.f32(1, "dw", C, true), a.f32(2, "dout", M * C), a.f32(3, "x", M * C),
              a.f32(4, "w", C), a.f32(5, "rstd", M), M, C);
  return info.Env().Undefined();
}

Napi::Value LayernormFwd(const Napi::CallbackInfo& info) {
  Args a{info, "layernormFwd"};
  a.need(9);
  long M = a.dim(6, "M"), C = a.dim(7, "C");
  layernorm_fwd(a.f32(0, "out", M * C), a.f32(1, "mean", M, true), a.f32(2, "rstd", M, true), a.f32(3, "x", M * C),
                a.f32(4, "w", C, true), a.f32(5, "b", C, true), M, C, (float)a.num(8, "eps"));
  return info.Env().Undefined();
}

Napi::Value LayernormBwd(const Napi::CallbackInfo& info) {
  Args a{info, "layernormBwd"};
  a.need(10);
  long M = a.dim(8, "M"), C = a.dim(9, "C");
  layernorm_bwd(a.f32(0, "dx", M * C, true), a.f32(1, "dw", C, true), a.f32(2, "db", C, true), a.f32(3, "dout", M * C),
                a.f32(4, "x", M * C), a.f32(5, "mean", M), a.f32(6, "rstd", M), a.f32(7, "w", C, true), M, C);
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a{info, "rope"};
  a.need(11);
  long B = a.dim(4, "B"), T = a.dim(5, "T"), H = a.dim(6, "H"), D = a.dim(7, "D"), R = a.dim(8, "R");
  if (R > D || R % 2) a.fail("rotary dims R must be even and <= D (R=" + std::to_string(R) + ", D=" + std::to_string(D) + ")");
  long n = B * T * H * D;
  rope(a.f32(0, "out", n), a.f32(1, "x", n), a.f32(2, "cos", T * (R / 2)), a.f32(3, "sin", T * (R / 2)), B, T, H, D, R,
       a.flag(9), a.flag(10));
  return info.Env().Undefined();
}

void att_dims(const Args& a, size_t at, long* B, long* T, long* H, long* KV, long* D) {
  *B = a.dim(at, "B");
  *T = a.dim(at + 1, "T");
  *H = a.dim(at + 2, "H");
  *KV = a.dim(at + 3, "KV");
  *D = a.dim(at + 4, "D");
  if (*KV == 0 || *H % *KV) a.fail("H (" + std::to_string(*H) + ") must be a multiple of KV (" + std::to_string(*KV) + ")");
}

Napi::Value AttentionFwd(const Napi::CallbackInfo& info) {
  Args a{info, "attentionFwd"};
  a.need(11);
  long B, T, H, KV, D;
  att_dims(a, 5, &B, &T, &H, &KV, &D);
  const long window = info.Length() > 11 && !a.isNull(11) ? a.dim(11, "window") : 0;  // 0: none
  const long past = info.Length() > 12 && !a.isNull(12) ? a.dim(12, "past") : 0;      // cached keys before q
  if (past > 0 && !a.isNull(1)) a.fail("P must be null when past > 0 (no backward through a KV cache)");
  const long S = past + T;
  attention_fwd(a.f32(0, "out", B * T * H * D), a.f32(1, "P", B * H * T * T, true), a.f32(2, "q", B * T * H * D),
                a.f32(3, "k", B * S * KV * D), a.f32(4, "v", B * S * KV * D), B, T, H, KV, D, (float)a.num(10, "scale"),
                window, past);
  return info.Env().Undefined();
}

// attentionFwdRows(out, q, k, v, pk: Float32Array[] (B), pv: Float32Array[] (B), past: Int32Array (B), B, T, H, KV, D,
// scale, window)
Napi::Value AttentionFwdRows(const Napi::CallbackInfo& info) {
  Args a{info, "attentionFwdRows"};
  a.need(14);
  long B, T, H, KV, D;
  att_dims(a, 7, &B, &T, &H, &KV, &D);
  const int32_t* past = a.i32(6, "past", B);
  const long ldk = KV * D;
  std::vector<const float*> pk(B), pv(B);
  for (int which = 0; which < 2; ++which) {
    const char* name = which ? "pv" : "pk";
    if (!info[4 + which].IsArray()) a.fail(std::string(name) + " must be an array of Float32Arrays");
    auto arr = info[4 + which].As<Napi::Array>();
    if ((long)arr.Length() != B) a.fail(std::string(name) + " has " + std::to_string(arr.Length()) + " rows, B is " +
                                        std::to_string(B));
    for (long b = 0; b < B; ++b) {
      const std::string el = std::string(name) + "[" + std::to_string(b) + "]";
      long len = 0;
      (which ? pv : pk)[b] = a.typed_value<float, napi_float32_array>(arr.Get((uint32_t)b), el, "Float32Array", 0,
                                                                       false, &len);
      if (past[b] < 0 || len < (long)past[b] * ldk)
        a.fail(el + " holds " + std::to_string(len) + " floats, " + std::to_string(past[b]) +
               " cached positions need " + std::to_string((long)past[b] * ldk));
    }
  }
  attention_fwd_rows(a.f32(0, "out", B * T * H * D), a.f32(1, "q", B * T * H * D), a.f32(2, "k", B * T * ldk),
                     a.f32(3, "v", B * T * ldk), pk.data(), pv.data(), past, B, T, H, KV, D,
                     (float)a.num(12, "scale"), a.dim(13, "window"));
  return info.Env().Undefined();
}

Napi::Value AttentionBwd(const Napi::CallbackInfo& info) {
  Args a{info, "attentionBwd"};
  a.need(14);
  long B, T, H, KV, D;
  att_dims(a, 8, &B, &T, &H, &KV, &D);
  long nq = B * T * H * D, nk = B * T * KV * D;
  attention_bwd(a.f32(0, "dq", nq), a.f32(1, "dk", nk), a.f32(2, "dv", nk), a.f32(3, "dout", nq), a.f32(4, "q", nq),
                a.f32(5, "k", nk), a.f32(6, "v", nk), a.f32(7, "P", B * H * T * T), B, T, H, KV, D,
                (float)a.num(13, "scale"));
  return info.Env().Undefined();
}

int act_kind(const Args& a, size_t i) {
  std::string k = a.info[i].ToString().Utf8Value();
  if (k == "relu") return ACT_RELU;
  if (k == "gelu") return ACT_GELU;
  if (k == "gelu_tanh") return ACT_GELU_TANH;
  if (k == "silu") return ACT_SILU;
  a.fail("unknown activation '" + k + "' (relu, gelu, gelu_tanh, silu)");
}

long len_of(const Args& a, size_t i, const char* name) {
  if (a.isNull(i) || !a.info[i].IsTypedArray()) a.fail(std::string(name) + " must be a Float32Array");
  return (long)a.info[i].As<Napi::TypedArray>().ElementLength();
}

Napi::Value ActFwd(const Napi::CallbackInfo& info) {
  Args a{info, "actFwd"};
  a.need(3);
  long n = len_of(a, 1, "x");
  int kind = act_kind(a, 2);
  act_fwd(a.f32(0, "out", n), a.f32(1, "x", n), n, kind);
  return info.Env().Undefined();
}

Napi::Value ActBwd(const Napi::CallbackInfo& info) {
  Args a{info, "actBwd"};
  a.need(4);
  long n = len_of(a, 2, "x");
  int kind = act_kind(a, 3);
  act_bwd(a.f32(0, "dx", n), a.f32(1, "dout", n), a.f32(2, "x", n), n, kind);
  return info.Env().Undefined();
}

Napi::Value SwigluFwd(const Napi::CallbackInfo& info) {
  Args a{info, "swigluFwd"};
  a.need(3);
  long n = len_of(a, 1, "g");
  swiglu_fwd(a.f32(0, "out", n), a.f32(1, "g", n), a.f32(2, "u", n), n);
  return info.Env().Undefined();
}

Napi::Value SwigluBwd(const Napi::CallbackInfo& info) {
  Args a{info, "swigluBwd"};
  a.need(5);
  long n = len_of(a, 3, "g");
  swiglu_bwd(a.f32(0, "dg", n, true), a.f32(1, "du", n, true), a.f32(2, "dout", n), a.f32(3, "g", n),
             a.f32(4, "u", n), n);
  return info.Env().Undefined();
}

Napi::Value Xent(const Napi::CallbackInfo& info) {
  Args a{info, "xent"};
  a.need(8);
  long M = a.dim(4, "M"), V = a.dim(5, "V");
  double ign = a.num(6, "ignoreIndex");
  int32_t* t = a.i32(3, "targets", M);
  for (long i = 0; i < M; ++i)
    if (t[i] != (int32_t)ign && (t[i] < 0 || t[i] >= V))
      a.fail("target " + std::to_string(t[i]) + " at row " + std::to_string(i) + " is outside [0, " +
             std::to_string(V) + ")");
  if (V == 0) a.fail("V must be positive");
  xent(a.f32(0, "loss", M), a.f32(1, "dlogits", M * V, true), a.f32(2, "logits", M * V), t, M, V, (int32_t)ign,
       (float)a.num(7, "scale"));
  return info.Env().Undefined();
}

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Args a{info, "adamw"};
  a.need(10);
  long n = len_of(a, 0, "param");
  long step = a.dim(9, "step");
  if (step < 1) a.fail("step must be >= 1");
  long bad = adamw(a.f32(0, "param", n), a.f32(1, "grad", n), a.f32(2, "m", n), a.f32(3, "v", n), n,
                   (float)a.num(4, "lr"), (float)a.num(5, "beta1"), (float)a.num(6, "beta2"), (float)a.num(7, "eps"),
                   (float)a.num(8, "weightDecay"), step);
  return Napi::Number::New(info.Env(), (double)bad);
}

Napi::Value Ew(const Napi::CallbackInfo& info) {
  Args a{info, "ew"};
  a.need(5);
  long op = a.dim(0, "op");
  if (op > EW_SUB) a.fail("unknown op " + std::to_string(op));
  long n = len_of(a, 1, "out");
  bool needs_b = op == EW_ADD || op == EW_SUB || op == EW_MUL || op == EW_MULACC;
  ew((int)op, a.f32(1, "out", n), a.f32(2, "a", n), a.f32(3, "b", n, !needs_b), n, (float)a.num(4, "alpha"));
  return info.Env().Undefined();
}

Napi::Value MaskApply(const Napi::CallbackInfo& info) {
  Args a{info, "maskApply"};
  a.need(2);
  long n = len_of(a, 0, "w");
  mask_apply(a.f32(0, "w", n), a.u8(1, "mask", n), n);
  return info.Env().Undefined();
}

// colSumsq(out: Float64Array (cols), x, n, cols): out[j] += sum_i x[i, j]^2
Napi::Value ColSumsq(const Napi::CallbackInfo& info) {
  Args a{info, "colSumsq"};
  a.need(4);
  const long n = a.dim(2, "n"), cols = a.dim(3, "cols");
  col_sumsq(a.typed<double, napi_float64_array>(0, "out", "Float64Array", cols, false, true), a.f32(1, "x", n * cols),
            n, cols);
  return info.Env().Undefined();
}

// rowLogsumexp(out: Float64Array (M), argmax: Int32Array (M), x, M, V) (see kernels.h)
Napi::Value RowLogsumexp(const Napi::CallbackInfo& info) {
  Args a{info, "rowLogsumexp"};
  a.need(5);
  const long M = a.dim(3, "M"), V = a.dim(4, "V");
  if (V == 0) a.fail("V must be positive");
  row_logsumexp(a.typed<double, napi_float64_array>(0, "out", "Float64Array", M, false, true), a.i32(1, "argmax", M),
                a.f32(2, "x", M * V), M, V);
  return info.Env().Undefined();
}

// maskedScaleAdd(out, base | null, x, mask, s): out = base + s * (x ⊙ mask) (see kernels.h)
Napi::Value MaskedScaleAdd(const Napi::CallbackInfo& info) {
  Args a{info, "maskedScaleAdd"};
  a.need(5);
  long n = len_of(a, 0, "out");
  masked_scale_add(a.f32(0, "out", n), a.f32(1, "base", n, true), a.f32(2, "x", n), a.u8(3, "mask", n),
                   (float)a.num(4, "s"), n);
  return info.Env().Undefined();
}

Napi::Value TopkPrune(const Napi::CallbackInfo& info) {
  Args a{info, "topkPrune"};
  a.need(6);
  long rows = a.dim(2, "rows"), cols = a.dim(3, "cols"), k = a.dim(4, "k");
  bool per_row = a.flag(5);
  if (k > (per_row ? cols : rows * cols)) a.fail("k=" + std::to_string(k) + " exceeds the group size");
  const float* s = a.f32(1, "scores", rows * cols);
  for (long i = 0; i < rows * cols; ++i)
    if (std::isnan(s[i])) a.fail("scores contain NaN at index " + std::to_string(i));
  topk_prune(a.u8(0, "mask", rows * cols), s, rows, cols, k, per_row);
  return info.Env().Undefined();
}

Napi::Value NmKeep(const Napi::CallbackInfo& info) {
  Args a{info, "nmKeep"};
  a.need(6);
  long rows = a.dim(2, "rows"), cols = a.dim(3, "cols"), n = a.dim(4, "n"), m = a.dim(5, "m");
  if (m == 0 || n >= m) a.fail("N:M needs 0 <= N < M (got " + std::to_string(n) + ":" + std::to_string(m) + ")");
  if (cols % m) a.fail("cols=" + std::to_string(cols) + " is not divisible by M=" + std::to_string(m));
  const float* s = a.f32(1, "scores", rows * cols);
  for (long i = 0; i < rows * cols; ++i)
    if (std::isnan(s[i])) a.fail("scores contain NaN at index " + std::to_string(i));
  nm_keep(a.u8(0, "mask", rows * cols), s, rows, cols, n, m);
  return info.Env().Undefined();
}

Napi::Value Cholesky(const Napi::CallbackInfo& info) {
  Args a{info, "cholesky"};
  a.need(2);
  long n = a.dim(1, "n");
  return Napi::Number::New(info.Env(), (double)cholesky(a.f32(0, "a", n * n), n));
}

Napi::Value TrtriLower(const Napi::CallbackInfo& info) {
  Args a{info, "trtriLower"};
  a.need(3);
  long n = a.dim(2, "n");
  const float* L = a.f32(1, "L", n * n);
  for (long i = 0; i < n; ++i)
    if (L[i * n + i] == 0.0f) a.fail("singular: L[" + std::to_string(i) + "," + std::to_string(i) + "] = 0");
  trtri_lower(a.f32(0, "out", n * n), L, n);
  return info.Env().Undefined();
}

// sparsegptObs(W1, Err1, mask1, U, ldu, d, rows, bs, nmN, nmM) -> loss (see kernels.h)
Napi::Value SparsegptObs(const Napi::CallbackInfo& info) {
  Args a{info, "sparsegptObs"};
  a.need(10);
  const long ldu = a.dim(4, "ldu"), rows = a.dim(6, "rows"), bs = a.dim(7, "bs"), nn = a.dim(8, "nmN"),
             nm = a.dim(9, "nmM");
  if (ldu < bs) a.fail("ldu=" + std::to_string(ldu) + " is below bs=" + std::to_string(bs));
  if (nm > 0 && (nn >= nm || bs % nm))
    a.fail("N:M " + std::to_string(nn) + ":" + std::to_string(nm) + " does not fit bs=" + std::to_string(bs));
  const float* d = a.f32(5, "d", bs);
  for (long i = 0; i < bs; ++i)
    if (!(d[i] != 0.0f)) a.fail("d[" + std::to_string(i) + "] is zero or NaN");
  // U: the block's rows of the factor, ldu apart (a view into the whole matrix: at least, not exactly, this long)
  const float* U = a.typed<float, napi_float32_array>(3, "U", "Float32Array", bs > 0 ? (bs - 1) * ldu + bs : 0,
                                                      false, false);
  const double loss = sparsegpt_obs(a.f32(0, "W1", rows * bs), a.f32(1, "Err1", rows * bs),
                                    a.u8(2, "mask1", rows * bs), U, ldu, d, rows, bs, nn, nm);
  return Napi::Number::New(info.Env(), loss);
}

// Memory map of a whole file (copy-on-write, the file is never modified), exposed as an external ArrayBuffer that unmaps when collected.
Napi::Value MmapFile(const Napi::CallbackInfo& info) {
  Args a{info, "mmapFile"};
  a.need(1);
  if (!info[0].IsString()) a.fail("path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(info.Env(), "mmapFile: cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Napi::Error::New(info.Env(), "mmapFile: " + path + " is not a regular file");
  }
  size_t size = (size_t)st.st_size;
  if (size == 0) {
    ::close(fd);
    return Napi::ArrayBuffer::New(info.Env(), 0);
  }
  // Private copy-on-write mapping: writes through a view (e.g. pruning in place) never reach the file.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw Napi::Error::New(info.Env(), "mmapFile: mmap of " + path + " failed: " + std::strerror(err));
  auto* sz = new size_t(size);
  return Napi::ArrayBuffer::New(info.Env(), p, size, [](Napi::Env, void* data, size_t* hint) {
    munmap(data, *hint);
    delete hint;
  }, sz);
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a{info, "setThreads"};
  a.need(1);
  long n = a.dim(0, "n");
  if (n < 1 || n > 256) a.fail("n must be in [1, 256]");
  pool_init((int)n);
  return Napi::Number::New(info.Env(), pool_threads());
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool_threads()); }

// The default thread count's source: CPUs in the affinity mask, capped by the CPU quota under a cgroup root
// (default /sys/fs/cgroup; tests point it at a folder of their own).
Napi::Value UsableCpus(const Napi::CallbackInfo& info) {
  Args a{info, "usableCpus"};
  std::string root = kCgroupRoot;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsString()) a.fail("cgroupRoot must be a string");
    root = info[0].As<Napi::String>().Utf8Value();
  }
  return Napi::Number::New(info.Env(), usable_cpus(root.c_str()));
}

const char* isa_name(int id) { return id == ISA_AVX512 ? "avx512" : id == ISA_AVX2 ? "avx2" : "scalar"; }

Napi::Value Cpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("active", isa_name(isa_active_id()));
  o.Set("best", isa_name(isa_best_id()));
  Napi::Array sup = Napi::Array::New(env);
  uint32_t k = 0;
  for (int id = 0; id <= 2; ++id)
    if (isa_supported(id)) sup.Set(k++, isa_name(id));
  o.Set("supported", sup);
  o.Set("mr", isa_active()->MR);
  o.Set("nr", isa_active()->NR);
  return o;
}

Napi::Value SetCpu(const Napi::CallbackInfo& info) {
  Args a{info, "setCpu"};
  a.need(1);
  std::string n = info[0].ToString().Utf8Value();
  int id = n == "avx512" ? ISA_AVX512 : n == "avx2" ? ISA_AVX2 : n == "scalar" ? ISA_SCALAR : -1;
  if (id < 0) a.fail("unknown cpu path '" + n + "' (avx512, avx2, scalar)");
  return Napi::Boolean::New(info.Env(), isa_set(id));
}

// FMA-throughput microbenchmark on every pool thread with the active ISA; returns GFLOP/s for the whole machine.
Napi::Value GemmBlocking(const Napi::CallbackInfo& info) {
  Args a{info, "gemmBlocking"};
  long kc = info.Length() > 0 && info[0].IsNumber() ? a.dim(0, "kc") : 0;
  long nc = 0;  // < 0: back to the default
  if (info.Length() > 1 && info[1].IsNumber()) nc = info[1].As<Napi::Number>().DoubleValue() < 0 ? -1 : a.dim(1, "nc");
  long mcp = info.Length() > 2 && info[2].IsNumber() ? a.dim(2, "mcp") : 0;
  long jg = info.Length() > 3 && info[3].IsNumber() ? a.dim(3, "jg") : 0;
  const struct {
    long v, max;
    const char* name;
  } bounds[] = {{kc, kMaxKC, "kc"}, {nc, kMaxNC, "nc"}, {mcp, kMaxMCP, "mcp"}, {jg, kMaxJG, "jg"}};
  for (const auto& b : bounds)
    if (b.v > b.max) a.fail(std::string(b.name) + " must be at most " + std::to_string(b.max));
  gemm_blocking(&kc, &nc, &mcp, &jg);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("kc", (double)kc);
  o.Set("nc", (double)nc);
  o.Set("mcp", (double)mcp);
  o.Set("jg", (double)jg);
  o.Set("coopGemms", (double)gemm_coop_count());
  o.Set("packedGemms", (double)gemm_packed_count());
  o.Set("colsGemms", (double)gemm_cols_count());
  return o;
}

Napi::Value PeakGflops(const Napi::CallbackInfo& info) {
  Args a{info, "peakGflops"};
  double seconds = a.isNull(0) ? 0.3 : a.num(0, "seconds");
  const IsaKernels* isa = isa_active();
  float sink[256];
  long iters = 1 << 16;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    double flops[256] = {0};
    pool_run([&](int ith, int) { flops[ith] = isa->peak(iters, &sink[ith]); });
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds || iters > (1L << 40)) {
      double total = 0;
      for (int i = 0; i < pool_threads(); ++i) total += flops[i];
      return Napi::Number::New(info.Env(), total / dt / 1e9);
    }
    iters *= 2;
  }
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("gemmPack", Napi::Function::New(env, GemmPack));
  exports.Set("biasAdd", Napi::Function::New(env, BiasAdd));
  exports.Set("biasGrad", Napi::Function::New(env, BiasGrad));
  exports.Set("rmsnormFwd", Napi::Function::New(env, RmsnormFwd));
  exports.Set("rmsnormBwd", Napi::Function::New(env, RmsnormBwd));
  exports.Set("layernormFwd", Napi::Function::New(env, LayernormFwd));
  exports.Set("layernormBwd", Napi::Function::New(env, LayernormBwd));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("attentionFwd", Napi::Function::New(env, AttentionFwd));
  exports.Set("attentionBwd", Napi::Function::New(env, AttentionBwd));
  exports.Set("attentionFwdRows", Napi::Function::New(env, AttentionFwdRows));
  exports.Set("actFwd", Napi::Function::New(env, ActFwd));
  exports.Set("actBwd", Napi::Function::New(env, ActBwd));
  exports.Set("swigluFwd", Napi::Function::New(env, SwigluFwd));
  exports.Set("swigluBwd", Napi::Function::New(env, SwigluBwd));
  exports.Set("xent", Napi::Function::New(env, Xent));
  exports.Set("adamw", Napi::Function::New(env, Adamw));
  exports.Set("ew", Napi::Function::New(env, Ew));
  exports.Set("maskApply", Napi::Function::New(env, MaskApply));
  exports.Set("maskedScaleAdd", Napi::Function::New(env, MaskedScaleAdd));
  exports.Set("colSumsq", Napi::Function::New(env, ColSumsq));
  exports.Set("rowLogsumexp", Napi::Function::New(env, RowLogsumexp));
  exports.Set("topkPrune", Napi::Function::New(env, TopkPrune));
  exports.Set("nmKeep", Napi::Function::New(env, NmKeep));
  exports.Set("cholesky", Napi::Function::New(env, Cholesky));
  exports.Set("trtriLower", Napi::Function::New(env, TrtriLower));
  exports.Set("sparsegptObs", Napi::Function::New(env, SparsegptObs));
  exports.Set("mmapFile", Napi::Function::New(env, MmapFile));
  exports.Set("allocF32", Napi::Function::New(env, AllocF32));
  exports.Set("alignment", Napi::Function::New(env, Alignment));
  exports.Set("adviseHuge", Napi::Function::New(env, AdviseHuge));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("usableCpus", Napi::Function::New(env, UsableCpus));
  exports.Set("cpu", Napi::Function::New(env, Cpu));
  exports.Set("setCpu", Napi::Function::New(env, SetCpu));
  exports.Set("peakGflops", Napi::Function::New(env, PeakGflops));
  exports.Set("gemmBlocking", Napi::Function::New(env, GemmBlocking));
  return exports;
}

}  // namespace

NODE_API_MODULE(perp_native, Init)
