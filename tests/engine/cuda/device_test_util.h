// Helpers shared by the CUDA kernel tests (wkv_cuda_check.cc, ops_cuda_check.cc): random host
// data and copies to and from device buffers that fail the test (not crash) on a CUDA error.
#pragma once

#include <cuda_runtime.h>

#include <random>
#include <utility>
#include <vector>

#include "engine/cuda/device_buffer.h"
#include "gtest/gtest.h"

namespace modrwkv::cuda::testing_util {

inline std::vector<float> Random(size_t n, std::mt19937& g, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer<T>> buf = AllocDevice<T>(host.size());
  EXPECT_TRUE(buf.ok()) << buf.status();
  if (!buf.ok()) return nullptr;
  EXPECT_EQ(cudaMemcpy(buf->get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return std::move(*buf);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& buf, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpy(host.data(), buf.get(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

}  // namespace modrwkv::cuda::testing_util
