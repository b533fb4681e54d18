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

static const IsaKernels* table(int id) {
#if defined(__x86_64__) || defined(__i386__)
  if (id == ISA_AVX512) return isa_avx512();
  if (id == ISA_AVX2) return isa_avx2();
#endif
  return isa_scalar();
}

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
