// Persistent thread pool: pool_run(fn) calls fn(ith, nth) on nth threads (the caller is thread 0) and waits.
// Kernels split work by (ith, nth) themselves, as ggml does. Nested calls run inline on one thread.
#pragma once
#include <functional>

namespace perp {

// nthreads <= 0: PERP_THREADS, else usable_cpus().
void pool_init(int nthreads);
// CPUs this process may use: its affinity mask (Linux; else all), capped by a CPU quota under cgroup_root (v2
// cpu.max, or v1 cpu/cpu.cfs_quota_us over cpu.cfs_period_us), rounded up. At least 1.
constexpr const char* kCgroupRoot = "/sys/fs/cgroup";
int usable_cpus(const char* cgroup_root = kCgroupRoot);
int pool_threads();
void pool_run(const std::function<void(int, int)>& fn);
// True on a thread that is running a pool job (a pool_run from there runs inline on one thread).
bool pool_nested();
// Static contiguous split of [0, n) into nth parts: [*b, *e) for part ith, aligned to `align`.
void pool_split(long n, int ith, int nth, long align, long* b, long* e);

}  // namespace perp
