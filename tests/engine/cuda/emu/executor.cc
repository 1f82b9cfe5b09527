// The CUDA emulator's launch executor (executor.h): kernels' blocks one after another, a block's
// threads as fibers on the calling thread, and the device-side calls of cuda_emu.h (barriers,
// warp exchanges, cp.async, griddepcontrol.wait).
#include "tests/engine/cuda/emu/executor.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <vector>

// AddressSanitizer's fiber annotations, where it instruments this file: g++ says so with
// __SANITIZE_ADDRESS__, clang (14, the sanitizer preset's) only through __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif

#if defined(CUDA_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace cuda_emu {
namespace {

// A block's threads run one at a time, each until it meets a barrier (or returns), in thread
// order for even blocks and in reverse order for odd ones: a thread that reads what another
// writes without a barrier between them reads it before the write in one of the two orders,
// and the test sees a wrong (often NaN) value. A barrier that some threads never reach is a
// deadlock, reported with who waits where.

constexpr size_t kFiberStackBytes = 512 << 10;

// Switching between fibers: the callee-saved registers and the stack pointer, nothing else (a
// kernel's thread switches at every barrier and shuffle, so this is the emulator's inner loop;
// ucontext's swapcontext makes a signal-mask system call each time). The FP control words (MXCSR,
// the x87 control word), callee-saved too, are not: nothing the emulator runs changes them (no
// fesetround: the rounding helpers round by their bits), so every fiber runs with the scheduler's,
// and saving and reloading them (ldmxcsr, fldcw) was a fifth of a switch.
// SwitchStacks(&from_sp, to_sp) saves the running context on its stack, stores its stack pointer
// in *from_sp and resumes the one saved at to_sp.
extern "C" void cuda_emu_switch_stacks(void** from_sp, void* to_sp);
asm(R"(
  .text
  .globl cuda_emu_switch_stacks
  .type cuda_emu_switch_stacks, @function
cuda_emu_switch_stacks:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch_stacks, .-cuda_emu_switch_stacks
  .section .note.GNU-stack,"",@progbits
  .text
)");

// A fresh fiber's saved stack pointer: the first switch to it "returns" into entry() (which never
// returns) with the stack aligned as at a call.
void* FreshStack(char* stack, size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;  // entry()'s return address: none
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int r = 0; r < 6; ++r) *--sp = 0;  // rbp, rbx, r12-r15
  return sp;
}

// A meeting of threads (the block's, or the lanes of a warp in one mask); a thread that has
// returned from the kernel no longer counts.
struct Meeting {
  int expected = 0;
  std::vector<int> waiting;     // fibers parked here
  uint64_t published[32] = {};  // a warp meeting's slots when its last lane arrived (Publish)
};

enum class FiberState { kRunnable, kWaiting, kDone };

// An asynchronous copy in flight (cp.async): its source read when issued, its destination
// written when the issuing thread waits.
struct PendingCopy {
  void* dst;
  size_t bytes;
  unsigned char data[16];
};

struct Fiber {
  void* sp = nullptr;  // where its context is saved while it does not run
  std::unique_ptr<char[]> stack;
  FiberState state = FiberState::kRunnable;
  uint3 index;
  const char* waits_at = "";
  std::vector<PendingCopy> copies;  // its cp.async copies not yet waited for
#if defined(CUDA_EMU_ASAN)
  void* fake_stack = nullptr;
  // The frames still on the stack when the fiber last finished (its entry's and its last
  // switch's) never returned, so their redzones are still poisoned: cleared before reuse.
  char* live_low = nullptr;
#endif
};

struct WarpMeetings {
  unsigned present = 0;  // lanes that exist and have not returned
  std::map<unsigned, Meeting> by_mask;
  uint64_t slots[32] = {};
};

// One block's run: its threads (fibers of one of the executor's pools), its barrier, its warps'
// meetings and its dynamic shared memory.
struct BlockRun {
  std::vector<Fiber>* fibers = nullptr;
  const KernelLaunch* launch = nullptr;
  int threads = 0;
  uint3 index;
  bool reverse = false;  // its threads in reverse index order
  bool early = false;    // started before its predecessor finished: griddepcontrol.wait parks
  int done = 0;
  Meeting barrier;
  Meeting predecessor;  // threads parked in griddepcontrol.wait while early
  std::vector<WarpMeetings> warps;
  std::vector<unsigned char> dynamic_shared;
};

class Executor {
 public:
  static Executor& Get() {
    static Executor e;
    return e;
  }

  // Runs every block of the launch, one after another (the caller holds the device mutex): in
  // index order in even launches and in reverse order in odd ones, so a block that reads what
  // another block of the launch writes, without a grid-wide protocol (a ticket taken after a
  // fence), reads it before the write in one of the two. A block started early (StartEarly)
  // goes on first.
  void Run(const KernelLaunch& launch) {
    const LaunchShape& shape = launch.shape;
    const dim3 g = shape.grid;
    const uint64_t blocks = static_cast<uint64_t>(g.x) * g.y * g.z;
    uint64_t started = blocks;  // the early block's index, if it is this launch's
    if (early_ != nullptr && early_->launch == &launch) {
      started = 0;
      std::unique_ptr<BlockRun> run = std::move(early_);
      run->early = false;
      Release(*run, run->predecessor);
      Drive(*run);
      early_launch_.reset();
    }
    BlockRun run;
    const bool backwards = launches_++ % 2 == 1;
    for (uint64_t i = 0; i < blocks; ++i) {
      const uint64_t b = backwards ? blocks - 1 - i : i;
      if (b == started) continue;
      Start(run, main_pool_, launch, b);
      Drive(run);
    }
  }

  // Programmatic dependent launch, adversarially: `next` (a launch queued right behind the
  // kernel about to run), if it is overlapped, has its block 0 run up to its griddepcontrol.wait
  // now, before that kernel runs at all; it goes on when `next` runs. So whatever a kernel reads
  // before its wait is read before its predecessor has written anything, and whatever it writes
  // before its wait is there when its predecessor runs. One early block at a time, and none for
  // a launch of the same kernel as its predecessor (their static __shared__ memory is one
  // here).
  void StartEarly(std::shared_ptr<const KernelLaunch> next, const void* predecessor_kernel) {
    if (early_ != nullptr || !next->overlapped || next->shape.kernel == predecessor_kernel) return;
    early_ = std::make_unique<BlockRun>();
    early_launch_ = std::move(next);  // kept until it runs
    Start(*early_, early_pool_, *early_launch_, 0);
    early_->early = true;
    Drive(*early_);
  }

  // griddepcontrol.wait: parks the thread if its block started early.
  void WaitForPredecessor() {
    if (run_->early) Park(run_->predecessor, Me(), "griddepcontrol.wait");
  }

  void SyncThreads() {
    Meeting& barrier = run_->barrier;
    if (static_cast<int>(barrier.waiting.size()) + 1 >= barrier.expected) {
      Release(*run_, barrier);
      return;
    }
    Park(barrier, Me(), "__syncthreads");
  }

  void SyncWarp(unsigned mask) { Publish(mask, nullptr); }

  // The calling lane's slot set to *mine (if given), then the meeting of its warp's lanes in
  // `mask`; returns the slots as the last lane to arrive found them.
  const uint64_t* Publish(unsigned mask, const uint64_t* mine) {
    WarpMeetings& warp = run_->warps[current_ / 32];
    const int lane = current_ % 32;
    if (!(mask & (1u << lane))) {
      std::fprintf(stderr,
                   "cuda_emu: lane %d calls a warp operation with mask %08x without itself\n", lane,
                   mask);
      std::abort();
    }
    if (mine != nullptr) warp.slots[lane] = *mine;
    auto [it, fresh] = warp.by_mask.try_emplace(mask);
    if (fresh) it->second.expected = __builtin_popcount(mask & warp.present);
    Meeting& m = it->second;
    if (static_cast<int>(m.waiting.size()) + 1 >= m.expected) {
      ReleaseWarp(warp, m);
    } else {
      Park(m, Me(), "a warp operation");
    }
    return m.published;
  }

  // A cp.async by the running thread: the source is read now and the destination filled with
  // NaN bits until the thread's next wait, the latest a device may complete the copy, so a read
  // of it before that wait (by the thread, or by another without the copier's wait before their
  // barrier) sees NaN, as does a copy into memory still being read.
  // The device faults (a misaligned address: the context is lost) where an address is not a
  // multiple of the copy's size, so the emulator stops there too, naming the thread.
  void AsyncCopy(void* dst, const void* src, size_t bytes) {
    const auto misaligned = [bytes](const void* p) {
      return reinterpret_cast<uintptr_t>(p) % bytes != 0;
    };
    if ((bytes != 4 && bytes != 8 && bytes != 16) || misaligned(dst) || misaligned(src)) {
      const uint3 t = Me().index;
      std::fprintf(stderr,
                   "cuda_emu: cp.async of %zu bytes from %p to %p in block (%u,%u,%u), thread "
                   "(%u,%u,%u): the size must be 4, 8 or 16 and both addresses a multiple of it\n",
                   bytes, src, dst, run_->index.x, run_->index.y, run_->index.z, t.x, t.y, t.z);
      std::abort();
    }
    PendingCopy c{dst, bytes, {}};
    std::memcpy(c.data, src, bytes);
    std::memset(dst, 0xff, bytes);
    Me().copies.push_back(c);
  }

  // cp.async.wait_all: the running thread's copies land.
  void AsyncWaitAll() { Land(Me()); }

  unsigned char* DynamicSharedMemory() {
    auto p = reinterpret_cast<uintptr_t>(run_->dynamic_shared.data());
    return reinterpret_cast<unsigned char*>((p + 15) / 16 * 16);
  }

 private:
  Fiber& Me() { return (*run_->fibers)[current_]; }

  // Sets `run` up as block b of `launch`, its threads fresh fibers of `pool`.
  void Start(BlockRun& run, std::vector<Fiber>& pool, const KernelLaunch& launch, uint64_t b) {
    const dim3 g = launch.shape.grid, bd = launch.shape.block;
    const int threads = static_cast<int>(bd.x * bd.y * bd.z);
    while (static_cast<int>(pool.size()) < threads) {
      pool.emplace_back();
      pool.back().stack = std::make_unique<char[]>(kFiberStackBytes);
    }
    run.fibers = &pool;
    run.launch = &launch;
    run.threads = threads;
    run.index = make_uint3(b % g.x, b / g.x % g.y, b / (static_cast<uint64_t>(g.x) * g.y));
    run.reverse = b % 2 == 1;
    run.early = false;
    run.done = 0;
    run.barrier = Meeting{threads, {}};
    run.predecessor = Meeting{};
    run.warps.assign((threads + 31) / 32, WarpMeetings{});
    for (size_t w = 0; w < run.warps.size(); ++w) {
      const int lanes = std::min(32, threads - static_cast<int>(w) * 32);
      run.warps[w].present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    }
    run.dynamic_shared.assign(launch.shape.shared_bytes + 16, 0xff);
    for (int t = 0; t < threads; ++t) {
      Fiber& f = pool[t];
      f.state = FiberState::kRunnable;
      f.index = make_uint3(t % bd.x, t / bd.x % bd.y, t / (bd.x * bd.y));
#if defined(CUDA_EMU_ASAN)
      if (f.live_low != nullptr) {
        __asan_unpoison_memory_region(f.live_low, f.stack.get() + kFiberStackBytes - f.live_low);
      }
#endif
      f.sp = FreshStack(f.stack.get(), kFiberStackBytes, &Executor::Entry);
    }
  }

  // Runs the block's threads until every one has returned, or, while the block is early, until
  // none can go on (the rest wait for the predecessor, or at a barrier one of those must reach).
  void Drive(BlockRun& run) {
    run_ = &run;
    blockIdx = run.index;
    blockDim = run.launch->shape.block;
    gridDim = run.launch->shape.grid;
    std::vector<Fiber>& fibers = *run.fibers;
    while (run.done < run.threads) {
      bool ran = false;
      for (int i = 0; i < run.threads; ++i) {
        const int t = run.reverse ? run.threads - 1 - i : i;
        if (fibers[t].state != FiberState::kRunnable) continue;
        ran = true;
        SwitchTo(t);
        if (fibers[t].state == FiberState::kDone) ++run.done;
      }
      if (!ran) {
        if (run.early) break;
        Deadlock(run);
      }
    }
    run_ = nullptr;
  }

  // The scheduler resumes fiber t until it parks or returns.
  void SwitchTo(int t) {
    current_ = t;
    Fiber& f = Me();
    threadIdx = f.index;
#if defined(CUDA_EMU_ASAN)
    void* save = nullptr;
    __sanitizer_start_switch_fiber(&save, f.stack.get(), kFiberStackBytes);
    cuda_emu_switch_stacks(&scheduler_sp_, f.sp);
    __sanitizer_finish_switch_fiber(save, nullptr, nullptr);
#else
    cuda_emu_switch_stacks(&scheduler_sp_, f.sp);
#endif
  }

  // The running fiber goes back to the scheduler (`finished`: for good).
  void Yield(bool finished) {
    Fiber& me = Me();
#if defined(CUDA_EMU_ASAN)
    if (finished) {
      // Below this frame: only the switch's own pushes (not instrumented).
      me.live_low = static_cast<char*>(__builtin_frame_address(0)) - 256;
    }
    __sanitizer_start_switch_fiber(finished ? nullptr : &me.fake_stack, scheduler_stack_bottom_,
                                   scheduler_stack_size_);
#endif
    cuda_emu_switch_stacks(&me.sp, scheduler_sp_);  // a finished fiber is never resumed
    if (!finished) Resumed();
  }

  // Called first in a fiber each time it runs again.
  void Resumed() {
#if defined(CUDA_EMU_ASAN)
    __sanitizer_finish_switch_fiber(Me().fake_stack, &scheduler_stack_bottom_,
                                    &scheduler_stack_size_);
#endif
  }

  static void Entry() {
    Executor& e = Get();
#if defined(CUDA_EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &e.scheduler_stack_bottom_, &e.scheduler_stack_size_);
#endif
    e.run_->launch->body();
    e.Land(e.Me());  // a thread's copies complete by the kernel's end
    e.Leave();
    e.Me().state = FiberState::kDone;
    e.Yield(/*finished=*/true);
    __builtin_unreachable();
  }

  void Land(Fiber& f) {
    for (const PendingCopy& c : f.copies) std::memcpy(c.dst, c.data, c.bytes);
    f.copies.clear();
  }

  void Park(Meeting& m, Fiber& me, const char* where) {
    me.state = FiberState::kWaiting;
    me.waits_at = where;
    m.waiting.push_back(current_);
    Yield(/*finished=*/false);
  }

  void Release(BlockRun& run, Meeting& m) {
    for (int t : m.waiting) (*run.fibers)[t].state = FiberState::kRunnable;
    m.waiting.clear();
  }

  // A warp meeting keeps the slots as they are now, when its last lane has arrived: each lane
  // reads them after it resumes, before it can publish again.
  void ReleaseWarp(const WarpMeetings& warp, Meeting& m) {
    std::copy(std::begin(warp.slots), std::end(warp.slots), std::begin(m.published));
    Release(*run_, m);
  }

  // The running thread has returned: the meetings it belonged to stop waiting for it.
  void Leave() {
    Meeting& barrier = run_->barrier;
    if (--barrier.expected <= static_cast<int>(barrier.waiting.size()) &&
        !barrier.waiting.empty()) {
      Release(*run_, barrier);
    }
    WarpMeetings& warp = run_->warps[current_ / 32];
    const unsigned me_bit = 1u << (current_ % 32);
    warp.present &= ~me_bit;
    for (auto& [mask, m] : warp.by_mask) {
      if (!(mask & me_bit)) continue;
      if (--m.expected <= static_cast<int>(m.waiting.size()) && !m.waiting.empty()) {
        ReleaseWarp(warp, m);
      }
    }
  }

  [[noreturn]] void Deadlock(const BlockRun& run) {
    const std::vector<Fiber>& fibers = *run.fibers;
    std::fprintf(stderr,
                 "cuda_emu: deadlock in block (%u,%u,%u): no thread can go on; %d of %d have "
                 "returned. Waiting:\n",
                 run.index.x, run.index.y, run.index.z, run.done, run.threads);
    int shown = 0;
    for (int t = 0; t < run.threads && shown < 16; ++t) {
      if (fibers[t].state != FiberState::kWaiting) continue;
      std::fprintf(stderr, "  thread %d at %s\n", t, fibers[t].waits_at);
      ++shown;
    }
    std::abort();
  }

  uint64_t launches_ = 0;
  // Fibers are grown, never shrunk: a fiber's stack outlives its uses. The early block's are
  // its own: they stay parked while the predecessor's blocks run.
  std::vector<Fiber> main_pool_, early_pool_;
  std::unique_ptr<BlockRun> early_;
  std::shared_ptr<const KernelLaunch> early_launch_;
  BlockRun* run_ = nullptr;  // the block whose threads run now
  void* scheduler_sp_ = nullptr;
  int current_ = 0;
  // Used by the sanitizers' fiber annotations only (no-ops in a build without them).
  [[maybe_unused]] const void* scheduler_stack_bottom_ = nullptr;
  [[maybe_unused]] size_t scheduler_stack_size_ = 0;
};

}  // namespace

void RunLaunch(const KernelLaunch& launch) { Executor::Get().Run(launch); }
void StartEarly(std::shared_ptr<const KernelLaunch> next, const void* predecessor_kernel) {
  Executor::Get().StartEarly(std::move(next), predecessor_kernel);
}

void SyncThreads() { Executor::Get().SyncThreads(); }
void SyncWarp(unsigned mask) { Executor::Get().SyncWarp(mask); }
const uint64_t* Publish(unsigned mask, uint64_t mine) {
  return Executor::Get().Publish(mask, &mine);
}
unsigned char* DynamicShared() { return Executor::Get().DynamicSharedMemory(); }
void AsyncCopy(void* dst, const void* src, size_t bytes) {
  Executor::Get().AsyncCopy(dst, src, bytes);
}
void AsyncWaitAll() { Executor::Get().AsyncWaitAll(); }
void WaitForPredecessor() { Executor::Get().WaitForPredecessor(); }

}  // namespace cuda_emu
