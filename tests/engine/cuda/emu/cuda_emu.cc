// The CUDA emulator's host side (cuda_emu.h says what it is for): the runtime API the backend and
// its tests call, with device memory in host memory, streams as queues run when the host waits,
// CUDA graphs as recorded queues, and kernels run block by block, a block's threads as fibers.
#include "tests/engine/cuda/emu/cuda_emu.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

// An operation queued on a stream: a kernel launch (`kernel` set, its function) or other work.
// An overlapped kernel launch can also start early (`start_early`, given its predecessor's
// kernel: Executor::StartEarly).
struct EmuOp {
  std::function<void()> run;
  const void* kernel = nullptr;
  std::function<void(const void*)> start_early;
};

// The runtime's opaque handles.
struct CUstream_st {
  std::deque<EmuOp> queue;
  uint64_t enqueued = 0;  // operations ever queued
  uint64_t completed = 0;
  struct CUgraph_st* capture = nullptr;  // while capturing: where operations go
  bool capture_invalidated = false;
  bool blocking = true;  // synchronises with the legacy default stream
};
struct CUevent_st {
  CUstream_st* stream = nullptr;  // where it was last recorded
  uint64_t seq = 0;               // the stream's operations before it
  double at_ms = 0;               // when the stream reached it
};
struct CUgraph_st {
  std::vector<EmuOp> ops;
};
struct CUgraphExec_st {
  std::vector<EmuOp> ops;
};

namespace cuda_emu {
namespace {

// ---- the device: one at a time, like one GPU's queue ----

std::recursive_mutex& DeviceMutex() {
  static std::recursive_mutex m;
  return m;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t Fail(cudaError_t e) {
  last_error = e;
  return e;
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

CUstream_st& DefaultStream() {
  static CUstream_st s;
  return s;
}
CUstream_st* Resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &DefaultStream();
  return s;
}

std::vector<CUstream_st*>& Streams() {
  static std::vector<CUstream_st*> all{&DefaultStream()};
  return all;
}

// Runs the stream's queued operations until `seq` of them have completed. A kernel followed by
// an overlapped launch lets that one start first (programmatic dependent launch).
void RunUntil(CUstream_st* s, uint64_t seq) {
  std::lock_guard lock(DeviceMutex());
  while (s->completed < seq && !s->queue.empty()) {
    EmuOp op = std::move(s->queue.front());
    s->queue.pop_front();
    if (op.kernel != nullptr && !s->queue.empty() && s->queue.front().start_early) {
      s->queue.front().start_early(op.kernel);
    }
    op.run();
    ++s->completed;
  }
}
void RunAll(CUstream_st* s) { RunUntil(s, UINT64_MAX); }
void RunEverything() {
  std::lock_guard lock(DeviceMutex());
  for (CUstream_st* s : Streams()) RunAll(s);
}

// Queues op on the stream, or records it into the stream's capture. The legacy default stream
// waits for the blocking streams' work queued before, and they for its.
cudaError_t QueueOp(cudaStream_t stream, EmuOp op) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture != nullptr) {
    s->capture->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  if (s == &DefaultStream()) {
    for (CUstream_st* other : Streams()) {
      if (other != s && other->blocking) RunAll(other);
    }
  } else if (s->blocking) {
    RunAll(&DefaultStream());
  }
  s->queue.push_back(std::move(op));
  ++s->enqueued;
  return cudaSuccess;
}

// Work other than a kernel.
cudaError_t Queue(cudaStream_t stream, std::function<void()> op) {
  return QueueOp(stream, EmuOp{std::move(op), nullptr, nullptr});
}

// What waits for the device is refused in a capturing stream, and spoils the capture.
bool RefusedWhileCapturing(CUstream_st* s) {
  if (s->capture == nullptr) return false;
  s->capture_invalidated = true;
  return true;
}

// ---- memory ----

struct Allocation {
  size_t bytes;
  bool pinned;
};
std::map<uintptr_t, Allocation>& Allocations() {
  static std::map<uintptr_t, Allocation> m;
  return m;
}
size_t device_bytes_in_use = 0;

size_t DeviceMemoryBytes() {
  static const size_t bytes = [] {
    const char* env = std::getenv("MODRWKV_CUDA_EMU_MEMORY_MB");
    return static_cast<size_t>(env != nullptr ? std::atoll(env) : 4096) << 20;
  }();
  return bytes;
}

void* Allocate(size_t bytes, bool pinned) {
  // 256-byte aligned as cudaMalloc's, and exactly `bytes` long, so that AddressSanitizer flags
  // an access past the end even where the device's allocation granularity would hide it.
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) != 0) return nullptr;
  // Fresh device memory holds whatever was there: NaN bits, so that a read of what nobody wrote
  // shows in the results.
  std::memset(p, 0xff, std::max<size_t>(bytes, 1));
  Allocations()[reinterpret_cast<uintptr_t>(p)] = {bytes, pinned};
  return p;
}

bool IsPinned(const void* p) {
  const auto& all = Allocations();
  auto it = all.upper_bound(reinterpret_cast<uintptr_t>(p));
  if (it == all.begin()) return false;
  --it;
  return it->second.pinned && reinterpret_cast<uintptr_t>(p) < it->first + it->second.bytes;
}

// ---- the launch executor: a block's threads as fibers on the calling thread ----
//
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
#if defined(__SANITIZE_ADDRESS__)
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

// A kernel launch as queued: its shape, its body (the kernel with its parameters bound), and
// whether it may start while the kernel before it in the stream runs (programmatic dependent
// launch, cudaLaunchAttributeProgrammaticStreamSerialization).
struct KernelLaunch {
  LaunchShape shape;
  std::function<void()> body;
  bool overlapped = false;
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

  // Programmatic dependent launch, adversarially: `next` (an overlapped launch queued right
  // behind the kernel about to run) has its block 0 run up to its griddepcontrol.wait now,
  // before that kernel runs at all; it goes on when `next` runs. So whatever a kernel reads
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
  void AsyncCopy(void* dst, const void* src, size_t bytes) {
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
#if defined(__SANITIZE_ADDRESS__)
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
#if defined(__SANITIZE_ADDRESS__)
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
#if defined(__SANITIZE_ADDRESS__)
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
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(Me().fake_stack, &scheduler_stack_bottom_,
                                    &scheduler_stack_size_);
#endif
  }

  static void Entry() {
    Executor& e = Get();
#if defined(__SANITIZE_ADDRESS__)
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

// The kernels' dynamic shared memory limits (cudaFuncSetAttribute).
std::map<const void*, int>& SharedLimits() {
  static std::map<const void*, int> m;
  return m;
}
constexpr int kDefaultSharedBytes = 48 * 1024;
constexpr int kMaxSharedBytesOptIn = 227 * 1024;  // sm_90
constexpr int kMultiprocessors = 132;             // an H100 / H200

}  // namespace

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

cudaError_t Enqueue(cudaStream_t stream, const LaunchShape& shape, std::function<void()> body,
                    bool overlapped) {
  const dim3 b = shape.block, g = shape.grid;
  const uint64_t threads = static_cast<uint64_t>(b.x) * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x == 0 ||
      g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    return Fail(cudaErrorInvalidConfiguration);
  }
  int limit = kDefaultSharedBytes;
  {
    std::lock_guard lock(DeviceMutex());
    if (auto it = SharedLimits().find(shape.kernel); it != SharedLimits().end()) limit = it->second;
  }
  if (shape.shared_bytes > static_cast<size_t>(limit)) return Fail(cudaErrorInvalidValue);
  auto launch =
      std::make_shared<const KernelLaunch>(KernelLaunch{shape, std::move(body), overlapped});
  EmuOp op{[launch] { Executor::Get().Run(*launch); }, shape.kernel, nullptr};
  if (overlapped) {
    op.start_early = [launch](const void* predecessor) {
      Executor::Get().StartEarly(launch, predecessor);
    };
  }
  return QueueOp(stream, std::move(op));
}

cudaError_t QueueWork(cudaStream_t stream, std::function<void()> work) {
  return Queue(stream, std::move(work));
}

void WaitForPredecessor() { Executor::Get().WaitForPredecessor(); }

}  // namespace cuda_emu

using namespace cuda_emu;  // NOLINT: the runtime's functions below are global, as cudart's are

// ---- errors ----

extern "C" {

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

// ---- devices ----

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : Fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = kMultiprocessors;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = kMaxSharedBytesOptIn;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = kDefaultSharedBytes;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    default:
      return Fail(cudaErrorInvalidValue);
  }
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return Fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulator on the CPU (sm_90 limits)");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->totalGlobalMem = DeviceMemoryBytes();
  prop->sharedMemPerBlock = kDefaultSharedBytes;
  prop->sharedMemPerBlockOptin = kMaxSharedBytesOptIn;
  prop->maxThreadsPerBlock = 1024;
  prop->warpSize = 32;
  prop->l2CacheSize = 50 << 20;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  std::lock_guard lock(DeviceMutex());
  *total = DeviceMemoryBytes();
  *free = *total - std::min(*total, device_bytes_in_use);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  RunEverything();
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || value > kMaxSharedBytesOptIn) return Fail(cudaErrorInvalidValue);
  std::lock_guard lock(DeviceMutex());
  SharedLimits()[func] = value;
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** p, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  if (device_bytes_in_use + bytes > DeviceMemoryBytes()) return Fail(cudaErrorMemoryAllocation);
  *p = Allocate(bytes, false);
  if (*p == nullptr) return Fail(cudaErrorMemoryAllocation);
  device_bytes_in_use += bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  RunEverything();  // cudaFree waits for the device
  std::lock_guard lock(DeviceMutex());
  auto it = Allocations().find(reinterpret_cast<uintptr_t>(p));
  if (it == Allocations().end() || it->second.pinned) return Fail(cudaErrorInvalidValue);
  device_bytes_in_use -= it->second.bytes;
  Allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  *p = Allocate(bytes, true);
  return *p == nullptr ? Fail(cudaErrorMemoryAllocation) : cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  if (p == nullptr) return cudaSuccess;
  RunEverything();
  std::lock_guard lock(DeviceMutex());
  auto it = Allocations().find(reinterpret_cast<uintptr_t>(p));
  if (it == Allocations().end() || !it->second.pinned) return Fail(cudaErrorInvalidValue);
  Allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}

// A copy queued on a stream. Pageable host memory behaves as the runtime documents: a source is
// read at the call (the runtime stages it), a destination is written before the call returns
// (the call waits for the stream); pinned memory is read and written when the stream gets there.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  const bool from_host = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost;
  const bool to_host = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost;
  if (from_host && !IsPinned(src) && s->capture == nullptr) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    return Queue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  if (to_host && !IsPinned(dst)) {
    if (RefusedWhileCapturing(s)) return Fail(cudaErrorStreamCaptureUnsupported);
    Queue(stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
    RunAll(s);
    return cudaSuccess;
  }
  return Queue(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = &DefaultStream();
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  RunAll(s);
  return e;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  return Queue(stream, [p, value, bytes] { std::memset(p, value, bytes); });
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  std::lock_guard lock(DeviceMutex());
  const cudaError_t e = cudaMemsetAsync(p, value, bytes, nullptr);
  RunAll(&DefaultStream());
  return e;
}

// ---- streams and events ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  std::lock_guard lock(DeviceMutex());
  *stream = new CUstream_st;
  (*stream)->blocking = (flags & cudaStreamNonBlocking) == 0;
  Streams().push_back(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  RunAll(stream);  // the runtime lets queued work finish
  auto& all = Streams();
  all.erase(std::remove(all.begin(), all.end(), stream), all.end());
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (RefusedWhileCapturing(s)) return Fail(cudaErrorStreamCaptureUnsupported);
  RunAll(s);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->queue.empty()) return cudaSuccess;
  RunAll(s);  // not ready now; the device gets on with it
  return cudaErrorNotReady;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  // The runtime frees a pending event once its stream gets there; here it gets there now.
  if (event->stream != nullptr) RunUntil(event->stream, event->seq);
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture != nullptr) return cudaSuccess;  // a node of the graph: no host-visible state
  event->stream = s;
  event->seq = s->enqueued + 1;
  return Queue(stream, [event] { event->at_ms = NowMs(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event->stream != nullptr) RunUntil(event->stream, event->seq);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  std::lock_guard lock(DeviceMutex());
  if (event->stream == nullptr || event->stream->completed >= event->seq) return cudaSuccess;
  RunUntil(event->stream, event->seq);  // not ready now; the device gets on with it
  return cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = static_cast<float>(end->at_ms - start->at_ms);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (event->stream == nullptr) return cudaSuccess;
  CUstream_st* other = event->stream;
  const uint64_t seq = event->seq;
  return Queue(stream, [other, seq] { RunUntil(other, seq); });
}

// ---- graphs ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s == &DefaultStream() || s->capture != nullptr) return Fail(cudaErrorInvalidValue);
  s->capture = new CUgraph_st;
  s->capture_invalidated = false;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  std::lock_guard lock(DeviceMutex());
  CUstream_st* s = Resolve(stream);
  if (s->capture == nullptr) return Fail(cudaErrorInvalidValue);
  CUgraph_st* g = s->capture;
  s->capture = nullptr;
  if (s->capture_invalidated) {
    delete g;
    *graph = nullptr;
    return Fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  std::lock_guard lock(DeviceMutex());
  *status = Resolve(stream)->capture != nullptr ? cudaStreamCaptureStatusActive
                                                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return Fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return Fail(cudaErrorInvalidValue);
  std::lock_guard lock(DeviceMutex());
  for (const EmuOp& op : exec->ops) QueueOp(stream, op);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
