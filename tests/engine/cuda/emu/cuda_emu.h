// The CUDA emulator's device side: force-included (-include) before anything else when a CUDA
// source of the backend is compiled as C++ for the emulated tests (tests/engine/cuda/emu/
// README.md). It gives the kernels' dialect a meaning on the CPU:
//   - a launch runs its blocks one after another (forwards and backwards in turn), each block's
//     threads as fibers on the calling thread (executor.cc), each running to its next barrier, so
//     __syncthreads is a real barrier,
//     __shared__ memory is really shared by the block's threads (function-local statics, reused
//     block after block), and a read of another thread's write without a barrier between them
//     sees the old value in one of the two orders the blocks' threads alternate between;
//   - warp shuffles, votes and matches exchange values at one meeting of the lanes of their mask
//     (Publish), which keeps a copy of what they published;
//   - cp.async copies land when their thread waits for them, the latest a device may, and until
//     then their destination holds NaN bits, so a read that does not wait for its copy sees them;
//   - device memory is host memory, so AddressSanitizer sees a kernel's out-of-bounds access;
//   - the host runtime (cuda_emu.cc) queues a stream's work and runs it when the host waits, so a
//     host read that does not wait for its copy sees stale data, as it may on a GPU.
//   - an overlapped launch (PDL) has its first block run up to its griddepcontrol.wait before the
//     kernel ahead of it runs (executor.cc's Executor::StartEarly);
// What it cannot check: timing, the memory model beyond a block's barriers and the two block
// orders, capacities it cannot see (static shared memory, registers).
#pragma once

#define MODRWKV_CUDA_EMULATION 1

// The launch indices are the emulator's thread-locals (below), not the toolkit's declarations.
#define __DEVICE_LAUNCH_PARAMETERS_H__
#define __global__
#define __device__
#define __host__
// Shared by the block's threads; blocks run one after another (cuda_emu.h's first comment).
#define __shared__ static

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cuda_emu {

// Barriers: the calling thread's block, or the lanes of its warp in `mask` (a lane that has
// returned from the kernel no longer counts).
void SyncThreads();
void SyncWarp(unsigned mask);
// A warp exchange: the calling lane publishes `mine` and meets the lanes of `mask`; returns every
// lane's published value as they stood when the last of them arrived (a copy the meeting keeps,
// so it needs no second barrier before a lane publishes again: the copy is replaced only when
// the same lanes meet again, which the reader is one of).
const uint64_t* Publish(unsigned mask, uint64_t mine);
// The launch's dynamic shared memory (16-byte aligned; filled with NaN bits at each block).
unsigned char* DynamicShared();
// cp.async (4, 8 or 16 bytes, both addresses aligned to the size, else the emulator aborts as the
// device faults) and cp.async.wait_all for the calling thread: the copy lands at the thread's
// next wait (or its return), its destination NaN bits until then (executor.cc).
void AsyncCopy(void* dst, const void* src, size_t bytes);
void AsyncWaitAll();

inline int Lane();

template <typename T>
T Exchange(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const uint64_t got = Publish(mask, bits)[src];
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

// A launch: cudaLaunchKernelEx in the emulated sources. Checks the configuration as the driver
// would and queues the kernel, its parameters copied now, on the stream.
struct LaunchShape {
  dim3 grid, block;
  size_t shared_bytes;
  const void* kernel;
};
// `overlapped`: launched with programmatic stream serialization, so its blocks may start before
// the kernel ahead of it in the stream has finished (executor.cc's Executor::StartEarly).
cudaError_t Enqueue(cudaStream_t stream, const LaunchShape& shape, std::function<void()> body,
                    bool overlapped);
// griddepcontrol.wait: the calling thread waits for the kernel before its own to finish.
void WaitForPredecessor();
// Host-side work queued on a stream like a kernel (the emulated cuBLAS's products).
cudaError_t QueueWork(cudaStream_t stream, std::function<void()> work);

template <typename... Params, typename... Args>
cudaError_t LaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...),
                           Args&&... args) {
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  bool overlapped = false;
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    const cudaLaunchAttribute& a = config->attrs[i];
    if (a.id == cudaLaunchAttributeProgrammaticStreamSerialization) {
      overlapped = a.val.programmaticStreamSerializationAllowed != 0;
    }
  }
  return Enqueue(
      config->stream,
      LaunchShape{config->gridDim, config->blockDim, config->dynamicSmemBytes,
                  reinterpret_cast<const void*>(kernel)},
      [kernel, params]() { std::apply(kernel, params); }, overlapped);
}

}  // namespace cuda_emu

#define cudaLaunchKernelEx ::cuda_emu::LaunchKernelEx
#define __launch_bounds__(...)

// The launch indices of the calling emulated thread (executor.cc sets them).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

inline int cuda_emu::Lane() { return static_cast<int>(threadIdx.x % 32); }

// The runtime's C++ form (the toolkit declares it for nvcc only).
template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

inline void __syncthreads() { ::cuda_emu::SyncThreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::SyncWarp(mask); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) {}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int base = ::cuda_emu::Lane() / width * width;
  return ::cuda_emu::Exchange(mask, v, base + src % width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int src = ::cuda_emu::Lane() ^ lane_mask;
  const int base = ::cuda_emu::Lane() / width * width;
  return ::cuda_emu::Exchange(mask, v, src < base + width ? src : ::cuda_emu::Lane());
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cuda_emu::Lane();
  const int src = lane - static_cast<int>(delta);
  return ::cuda_emu::Exchange(mask, v, src >= lane / width * width ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cuda_emu::Lane();
  const int src = lane + static_cast<int>(delta);
  return ::cuda_emu::Exchange(mask, v, src < (lane / width + 1) * width ? src : lane);
}

// Votes and matches: every lane of `mask` publishes its value, then reads the others'.
namespace cuda_emu {
template <typename F>
unsigned Vote(unsigned mask, uint64_t mine, F keep) {
  const uint64_t* all = Publish(mask, mine);
  unsigned out = 0;
  for (int l = 0; l < 32; ++l) {
    if ((mask >> l & 1u) && keep(all[l])) out |= 1u << l;
  }
  return out;
}
}  // namespace cuda_emu

inline unsigned __ballot_sync(unsigned mask, int p) {
  return ::cuda_emu::Vote(mask, p != 0, [](uint64_t v) { return v != 0; });
}
inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) { return __ballot_sync(mask, p) == mask; }
template <typename T>
unsigned __match_any_sync(unsigned mask, T v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return ::cuda_emu::Vote(mask, bits, [bits](uint64_t o) { return o == bits; });
}
inline unsigned __activemask() { return 0xffffffffu; }

template <typename T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <typename T>
T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {  // blocks run one after another here: every write is already visible
  return *p;
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline unsigned __brev(unsigned v) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= (v >> i & 1u) << (31 - i);
  return r;
}

inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }

inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline float __expf(float v) { return std::exp(v); }
inline float __logf(float v) { return std::log(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float v) { return 1.0f / v; }
inline float __saturatef(float v) { return std::min(1.0f, std::max(0.0f, v)); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

// The device's integer min / max (CUDA declares them for device code only).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
