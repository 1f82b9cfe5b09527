// Helpers shared by the CUDA kernel tests (wkv_cuda_check.cc, ops_cuda_check.cc,
// wkv_decode_check.cc): random host data, copies to and from device buffers that fail the test
// (not crash) on a CUDA error, comparisons, f16 state elements, a fixture that needs a device.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "gtest/gtest.h"

namespace modrwkv::cuda::testing_util {

// Built against the CUDA emulator (tests/engine/cuda/emu): kernels run on the CPU, a thread at a
// time, so the largest cases run at a smaller size there (each test says where).
#ifdef MODRWKV_CUDA_EMULATION
inline constexpr bool kEmulated = true;
#else
inline constexpr bool kEmulated = false;
#endif

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

// Element-wise |got - want| <= tol * max(1, |want|); a non-finite `want` must be matched exactly
// (NaN by NaN).
inline void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float tol,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float g = got[i], w = want[i];
    const bool ok = std::isfinite(w) ? std::fabs(g - w) <= tol * std::max(1.0f, std::fabs(w))
                    : std::isnan(w)  ? std::isnan(g)
                                     : g == w;
    if (!ok && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: gpu " << g << " cpu " << w << " (tolerance " << tol
                    << " x max(1, |cpu|))";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements out of tolerance";
}

// Shift-state elements: f32, or f16 bits on the host (__half on the device).
inline float StateValue(float v) { return v; }
inline float StateValue(uint16_t v) { return F16ToF32(v); }
template <typename S>
S ToState(float v) {
  if constexpr (std::is_same_v<S, float>) {
    return v;
  } else {
    return F32ToF16(v);
  }
}
inline const float* DeviceState(const float* p) { return p; }
inline float* DeviceState(float* p) { return p; }
inline const __half* DeviceState(const uint16_t* p) { return reinterpret_cast<const __half*>(p); }
inline __half* DeviceState(uint16_t* p) { return reinterpret_cast<__half*>(p); }

// Bit for bit (the state pools: the stored rows and everything around them).
template <typename S>
void ExpectSameBits(const std::vector<S>& got, const std::vector<S>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(S)) != 0 && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: gpu " << StateValue(got[i]) << " cpu "
                    << StateValue(want[i]);
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

// A test fixture that needs a device (skipped without one) and gives each test a stream.
template <typename Base>
class OnDevice : public Base {
 protected:
  void SetUp() override {
    absl::StatusOr<int> n = CudaDeviceCount();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) GTEST_SKIP() << "no CUDA device";
    absl::StatusOr<CudaStream> s = CreateStream();
    ASSERT_TRUE(s.ok()) << s.status();
    stream_ = std::move(*s);
  }

  CudaStream stream_;
};

}  // namespace modrwkv::cuda::testing_util
