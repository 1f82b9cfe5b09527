// Copies from global to shared memory that run in the background (cp.async, sm_80+): a copy
// completes for the issuing thread at its next CpAsyncWaitAll(); another thread sees it after
// that wait and a barrier. The CUDA emulator (tests/engine/cuda/emu) completes each copy as late
// as a device may, at that wait, with NaN bits in its destination until then, so a read that
// does not wait for the copy fails its test there.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace modrwkv::cuda {

// 4 bytes, cached in L1 and L2 (the WKV kernels' staged inputs).
__device__ __forceinline__ void CpAsync4(float* shared, const float* global) {
#ifdef MODRWKV_CUDA_EMULATION
  ::cuda_emu::AsyncCopy(shared, global, sizeof(float));
#else
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(global) : "memory");
#endif
}

// 16 bytes, cached in L2 only (weights streamed once: both pointers 16-byte aligned).
__device__ __forceinline__ void CpAsync16(uint4* shared, const uint4* global) {
#ifdef MODRWKV_CUDA_EMULATION
  ::cuda_emu::AsyncCopy(shared, global, sizeof(uint4));
#else
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(global) : "memory");
#endif
}

__device__ __forceinline__ void CpAsyncWaitAll() {
#ifdef MODRWKV_CUDA_EMULATION
  ::cuda_emu::AsyncWaitAll();
#else
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

}  // namespace modrwkv::cuda
