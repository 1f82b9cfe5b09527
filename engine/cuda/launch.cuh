// Kernel launches through one helper, with programmatic dependent launch where the device has it
// (launch.h says why), and the device-side halves of PDL.
//
// The contract for a kernel launched by Launch(): before its first read of anything an earlier
// kernel in the stream may write, and before its first global write, every block calls
// WaitForPredecessor(). Before that call it may only read what no kernel writes (weights,
// parameters: the small kernels load theirs there, or send them to L2 with PrefetchToL2). Without
// PDL (older devices, the switch off) both calls are no-ops and launches are ordinary
// stream-ordered ones.
//
// Each kernel also calls AllowSuccessor() early: the next kernel's blocks may then be scheduled
// once every block of this one has called it (that is, while this kernel's last wave runs), and
// they wait in WaitForPredecessor() for this kernel's completion and its memory. Transitively
// a kernel's wait covers every earlier kernel (each one's completion follows its own wait).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/launch.h"

namespace modrwkv::cuda {

__device__ __forceinline__ void WaitForPredecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#elif defined(MODRWKV_CUDA_EMULATION)
  // The emulator runs a launch's first block up to here before its predecessor
  // (tests/engine/cuda/emu/executor.cc).
  ::cuda_emu::WaitForPredecessor();
#endif
}

__device__ __forceinline__ void AllowSuccessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Starts bringing `bytes` at `p` into L2 and returns at once (one bulk prefetch, sm_90+). A no-op
// before sm_90 and where p or bytes is not a multiple of 16 (the bulk copy's alignment).
__device__ __forceinline__ void PrefetchToL2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if ((reinterpret_cast<uintptr_t>(p) | bytes) % 16 != 0 || bytes == 0) return;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
  (void)p;
  (void)bytes;
#endif
}

// The kernel's dynamic shared memory (the launch's shared_bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* DynamicShared() {
#ifdef MODRWKV_CUDA_EMULATION
  return reinterpret_cast<T*>(::cuda_emu::DynamicShared());
#else
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  return reinterpret_cast<T*>(dynamic_shared);
#endif
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), with PDL where OverlappedLaunches();
// the launch's error as a Status naming `kernel_name`.
template <typename... Params, typename... Args>
absl::Status Launch(const char* kernel_name, void (*kernel)(Params...), dim3 grid, dim3 block,
                    size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute overlap[1] = {};
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  if (OverlappedLaunches()) {
    config.attrs = overlap;
    config.numAttrs = 1;
  }
  cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  return CudaStatus(cudaGetLastError(), kernel_name);
}

}  // namespace modrwkv::cuda
