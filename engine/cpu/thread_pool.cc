#include "engine/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/cpu/cpu_budget.h"

namespace modrwkv::cpu {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// How long a worker spins for the next job before sleeping. A decode step issues jobs a few
// microseconds apart; a gap between requests is milliseconds or more.
constexpr auto kSpin = std::chrono::microseconds(300);

constexpr uint64_t kFieldMask = (uint64_t{1} << 24) - 1;
inline uint64_t Pack(uint64_t gen, uint64_t n, uint64_t next) {
  return (gen << 48) | (n << 24) | next;
}
inline uint64_t TicketN(uint64_t t) { return (t >> 24) & kFieldMask; }
inline uint64_t TicketNext(uint64_t t) { return t & kFieldMask; }

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = DetectCpuBudget().threads;
  if (threads <= 0) threads = 1;
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { WorkerLoop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  wake_.fetch_add(1, std::memory_order_release);
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::Drain(int thread) {
  uint64_t t = ticket_.load(std::memory_order_acquire);
  while (TicketNext(t) < TicketN(t)) {
    if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
      continue;  // t was reloaded
    }
    // A valid claim: the caller cannot return (or publish another job) before this task is
    // counted done, so tramp_/ctx_ are those of the claimed job.
    tramp_(ctx_, static_cast<int64_t>(TicketNext(t)), thread);
    done_.fetch_add(1, std::memory_order_acq_rel);
    t = ticket_.load(std::memory_order_acquire);
  }
}

void ThreadPool::Run(int64_t n_tasks, Trampoline tramp, void* ctx) {
  for (int64_t base = 0; base < n_tasks; base += kMaxTasksPerJob) {
    const int64_t n = std::min(kMaxTasksPerJob, n_tasks - base);
    struct Offset {
      Trampoline tramp;
      void* ctx;
      int64_t base;
    } off{tramp, ctx, base};
    tramp_ = base == 0 ? tramp : [](void* c, int64_t task, int thread) {
      auto* o = static_cast<Offset*>(c);
      o->tramp(o->ctx, o->base + task, thread);
    };
    ctx_ = base == 0 ? ctx : &off;
    done_.store(0, std::memory_order_relaxed);
    generation_ = (generation_ + 1) & 0xffff;
    ticket_.store(Pack(generation_, static_cast<uint64_t>(n), 0), std::memory_order_release);
    wake_.fetch_add(1, std::memory_order_release);
    wake_.notify_all();
    Drain(0);
    // Wait for tasks other threads claimed; yield if they are slow (an oversubscribed machine).
    int spins = 0;
    while (done_.load(std::memory_order_acquire) != n) {
      if (++spins < 4096) {
        CpuRelax();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint32_t seen = 0;
  while (true) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    uint32_t w;
    int spins = 0;
    while ((w = wake_.load(std::memory_order_acquire)) == seen) {
      CpuRelax();
      if (++spins % 256 == 0 && std::chrono::steady_clock::now() > spin_until) {
        wake_.wait(seen, std::memory_order_acquire);
      }
    }
    seen = w;
    if (stop_.load()) return;
    Drain(thread);
  }
}

}  // namespace modrwkv::cpu
