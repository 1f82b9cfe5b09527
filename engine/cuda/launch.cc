// The PDL and early-load switches and the per-device capability cache (see launch.h).
#include "engine/cuda/launch.h"

#include <cuda_runtime.h>

#include <atomic>

namespace modrwkv::cuda {
namespace {

std::atomic<bool> g_overlap{true};
std::atomic<bool> g_early_loads{true};

// Per device ordinal: 0 not yet known, 1 no PDL (compute capability < 9.0), 2 PDL.
constexpr int kMaxDevices = 64;
std::atomic<int> g_supported[kMaxDevices];

}  // namespace

void SetOverlappedLaunches(bool on) { g_overlap.store(on, std::memory_order_relaxed); }

void SetEarlyWeightLoads(bool on) { g_early_loads.store(on, std::memory_order_relaxed); }

bool EarlyWeightLoads() { return g_early_loads.load(std::memory_order_relaxed); }

bool OverlappedLaunches() {
  if (!g_overlap.load(std::memory_order_relaxed)) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();  // not this launch's error; the launch reports its own
    return false;
  }
  int known = g_supported[device].load(std::memory_order_relaxed);
  if (known == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    known = major >= 9 ? 2 : 1;
    g_supported[device].store(known, std::memory_order_relaxed);
  }
  return known == 2;
}

}  // namespace modrwkv::cuda
