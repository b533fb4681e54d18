// Runtime CPU dispatch: picks AVX-512, AVX2+FMA or the portable scalar path; PERP_CPU=avx512|avx2|scalar forces one.
#include <cstdlib>
#include <cstring>

#include "isa.h"

namespace perp {

static bool cpu_has(int id) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (id == ISA_AVX512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  if (id == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return id == ISA_SCALAR;
}

bool isa_supported(int id) {
#if !(defined(__x86_64__) || defined(__i386__))
  return id == ISA_SCALAR;
#else
  return id >= 0 && id <= 2 && cpu_has(id);
#endif
}

int isa_best_id() {
  for (int id = ISA_AVX512; id > ISA_SCALAR; --id)
    if (isa_supported(id)) return id;
  return ISA_SCALAR;
}

static const IsaKernels* raw_table(int id) {
#if defined(__x86_64__) || defined(__i386__)
  if (id == ISA_AVX512) return isa_avx512();
  if (id == ISA_AVX2) return isa_avx2();
#endif
  return isa_scalar();
}

// Each ISA's table with its optional row kernels (nullptr) filled from the scalar table, so callers never check.
static IsaKernels merged(int id) {
  IsaKernels t = *raw_table(id);
  const IsaKernels* s = isa_scalar();
  if (!t.softmax) t.softmax = s->softmax;
  if (!t.softmax_bwd) t.softmax_bwd = s->softmax_bwd;
  if (!t.xent_row) t.xent_row = s->xent_row;
  if (!t.adamw) t.adamw = s->adamw;
  if (!t.nonfinite) t.nonfinite = s->nonfinite;
  return t;
}

static const IsaKernels g_tables[3] = {merged(ISA_SCALAR), merged(ISA_AVX2), merged(ISA_AVX512)};

static const IsaKernels* table(int id) { return &g_tables[id]; }

static int g_active = -1;

static int initial_isa() {
  int best = isa_best_id();
  const char* env = std::getenv("PERP_CPU");
  if (!env || !*env) return best;
  int want = best;
  if (!std::strcmp(env, "scalar")) want = ISA_SCALAR;
  else if (!std::strcmp(env, "avx2")) want = ISA_AVX2;
  else if (!std::strcmp(env, "avx512")) want = ISA_AVX512;
  return isa_supported(want) ? want : best;
}

int isa_active_id() {
  if (g_active < 0) g_active = initial_isa();
  return g_active;
}

const IsaKernels* isa_active() { return table(isa_active_id()); }

bool isa_set(int id) {
  if (!isa_supported(id)) return false;
  g_active = id;
  return true;
}

}  // namespace perp
