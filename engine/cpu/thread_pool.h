// A small fork-join pool for the CPU backend: the calling thread and n-1 workers split a loop of
// tasks. Workers spin briefly between loops (a decode step runs hundreds of short loops) and then
// sleep on a futex, so an idle server does not burn CPU.
//
// The pool is the only source of parallelism in the CPU backend: BLAS is kept single-threaded and
// called from inside tasks, so two pools never fight over the cores.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace modrwkv::cpu {

class ThreadPool {
 public:
  // threads <= 0: one per CPU this process may use (DetectCpuBudget: affinity and cgroup quota).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, thread) for task in [0, n_tasks), spread over the pool's threads; returns when
  // all are done. `thread` is in [0, size()) and is stable within one call (for scratch buffers).
  // Called from one thread at a time (the scheduler thread).
  template <typename Fn>
  void ParallelFor(int64_t n_tasks, Fn&& fn) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || workers_.empty()) {
      for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
      return;
    }
    Run(
        n_tasks,
        [](void* ctx, int64_t task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); }, &fn);
  }

 private:
  using Trampoline = void (*)(void*, int64_t, int);
  // Largest task count one published job carries (the rest go in further jobs).
  static constexpr int64_t kMaxTasksPerJob = (int64_t{1} << 24) - 1;

  void Run(int64_t n_tasks, Trampoline tramp, void* ctx);
  void WorkerLoop(int thread);
  // Claims and runs tasks of whatever job is published until none is left.
  void Drain(int thread);

  std::vector<std::thread> workers_;
  // The job ticket packs [generation:16][n_tasks:24][next_task:24], so a claim is valid only for
  // the job it was made against: a worker that wakes late can never run a task with another
  // job's function, and needs no registration with the caller.
  alignas(64) std::atomic<uint64_t> ticket_{0};
  alignas(64) std::atomic<int64_t> done_{0};
  // Futex word the sleeping workers wait on; bumped for every job.
  alignas(64) std::atomic<uint32_t> wake_{0};
  uint64_t generation_ = 0;  // written by the caller only
  Trampoline tramp_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
};

}  // namespace modrwkv::cpu
