// Persistent pool: workers spin on a generation counter (20 ms by default, PERP_SPIN_MS; yielding now and then, see
// relax()), then sleep on a condition variable.
#include "pool.h"

#ifdef __linux__
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace perp {
namespace {

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<unsigned> generation{0};
  std::atomic<int> pending{0};
  std::atomic<int> sleepers{0};
  const std::function<void(int, int)>* job = nullptr;
  int nth = 1;
  bool stop = false;
  long spin_ns = 20000000;  // PERP_SPIN_MS (default 20)
};

Pool* g_pool = nullptr;

// One step of a spin-wait: a pause, and every 64th time a yield of the CPU. With more runnable threads than cores
// (several perp processes, or a test runner's parallel workers, each with a pool as wide as the machine) a pure spin
// burns the time slice that the thread being waited for needs: three 2-thread processes on 2 cores took 3.3x as long
// as one after another, and the test suite with PERP_THREADS=16 on 2 cores had not finished after 15 minutes (29 s
// now). A yield with nothing else to run returns at once.
inline void relax(int spins) {
  if ((spins & 63) == 63) std::this_thread::yield();
#if defined(__x86_64__) || defined(__i386__)
  else __builtin_ia32_pause();
#endif
}
thread_local bool t_in_pool = false;

void worker_main(Pool* p, int ith) {
  t_in_pool = true;
  unsigned seen = 0;
  for (;;) {
    unsigned g;
    // Spin for up to spin_ns before sleeping: waking a sleeping thread costs milliseconds on a VM whose idle vCPU
    // halts (measured: 666 wake-ups cost 1.6 s over six llama768 steps with a ~1 ms spin), far more than the
    // spinning. The clock is read every 256 pauses.
    const auto t0 = std::chrono::steady_clock::now();
    for (int spins = 0; (g = p->generation.load(std::memory_order_acquire)) == seen; ++spins) {
      if ((spins & 255) == 255 &&
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count() >
              p->spin_ns)
        break;
      relax(spins);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(p->mu);
      p->sleepers.fetch_add(1);
      p->cv.wait(lk, [&] { return p->stop || p->generation.load() != seen; });
      p->sleepers.fetch_sub(1);
      if (p->stop) return;
      g = p->generation.load(std::memory_order_acquire);
    }
    seen = g;
    if (p->stop) return;
    (*p->job)(ith, p->nth);
    p->pending.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void pool_shutdown() {
  if (!g_pool) return;
  {
    std::lock_guard<std::mutex> lk(g_pool->mu);
    g_pool->stop = true;
    g_pool->generation.fetch_add(1, std::memory_order_release);
  }
  g_pool->cv.notify_all();
  for (auto& t : g_pool->workers) t.join();
  delete g_pool;
  g_pool = nullptr;
}

// The first line of a small file, or "" when it cannot be read.
std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (f) std::getline(f, line);
  return line;
}

// A cgroup CPU quota as whole CPUs (rounded up), or 0 for none: v2 "max 100000" / "150000 100000", v1 quota -1 or
// microseconds per period.
long quota_cpus(const std::string& quota, const std::string& period) {
  char* end = nullptr;
  const double q = std::strtod(quota.c_str(), &end);
  if (end == quota.c_str()) return 0;  // "max", or nothing there
  const double p = std::strtod(period.c_str(), &end);
  if (end == period.c_str() || !(q > 0) || !(p > 0)) return 0;
  return (long)std::ceil(q / p);
}

int default_threads() {
  const char* env = std::getenv("PERP_THREADS");
  if (env && *env) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return usable_cpus();
}

}  // namespace

// hardware_concurrency() counts the machine's CPUs. In a container limited to a few (docker --cpus, a Kubernetes CPU
// limit, a cpuset) a pool that wide has most of its threads descheduled or throttled at every join.
int usable_cpus(const char* cgroup_root) {
  long n = (long)std::thread::hardware_concurrency();
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
#endif
  const std::string root = cgroup_root ? cgroup_root : "";
  long q = 0;
  if (!root.empty()) {
    const std::string v2 = first_line(root + "/cpu.max");
    if (!v2.empty()) {
      const size_t sp = v2.find(' ');
      q = quota_cpus(v2.substr(0, sp), sp == std::string::npos ? "" : v2.substr(sp + 1));
    } else {
      for (const char* dir : {"/cpu", "/cpu,cpuacct"}) {
        q = quota_cpus(first_line(root + dir + "/cpu.cfs_quota_us"), first_line(root + dir + "/cpu.cfs_period_us"));
        if (q > 0) break;
      }
    }
  }
  if (q > 0 && (n <= 0 || q < n)) n = q;
  return n > 0 ? (int)std::min(n, 256L) : 1;
}

void pool_init(int n) {
  if (n <= 0) n = default_threads();
  if (n > 256) n = 256;
  if (g_pool && g_pool->nth == n) return;
  pool_shutdown();
  g_pool = new Pool();
  g_pool->nth = n;
  if (const char* e = std::getenv("PERP_SPIN_MS")) g_pool->spin_ns = (long)(std::atof(e) * 1e6);
  for (int i = 1; i < n; ++i) g_pool->workers.emplace_back(worker_main, g_pool, i);
}

int pool_threads() {
  if (!g_pool) pool_init(0);
  return g_pool->nth;
}

bool pool_nested() { return t_in_pool; }

void pool_run(const std::function<void(int, int)>& fn) {
  if (!g_pool) pool_init(0);
  Pool* p = g_pool;
  if (t_in_pool || p->nth == 1) {
    fn(0, 1);
    return;
  }
  p->job = &fn;
  p->pending.store(p->nth - 1, std::memory_order_release);
  p->generation.fetch_add(1);
  if (p->sleepers.load() > 0) {
    { std::lock_guard<std::mutex> lk(p->mu); }
    p->cv.notify_all();
  }
  t_in_pool = true;
  fn(0, p->nth);
  t_in_pool = false;
  for (int spins = 0; p->pending.load(std::memory_order_acquire) != 0; ++spins) relax(spins);
}

void pool_split(long n, int ith, int nth, long align, long* b, long* e) {
  if (align < 1) align = 1;
  long units = (n + align - 1) / align;
  long per = units / nth, rem = units % nth;
  long ub = ith * per + (ith < rem ? ith : rem);
  long ue = ub + per + (ith < rem ? 1 : 0);
  *b = ub * align < n ? ub * align : n;
  *e = ue * align < n ? ue * align : n;
}

}  // namespace perp
