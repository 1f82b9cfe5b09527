// Helpers shared by the fused time-mixing kernels' tests (wkv_decode_check.cc,
// wkv_prefill_check.cc): a layer's random per-channel parameters on the device and the state
// pool's element type as a test parameter.
#pragma once

#include <random>

#include "engine/cuda/device_buffer.h"
#include "engine/cuda/wkv_decode.cuh"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda::testing_util {

enum class StateType { kF32, kF16 };

// A layer's per-channel parameters, random in ranges like the model's, on the device.
struct RandomParams {
  RandomParams(int C, std::mt19937& g)
      : w0(Upload(Random(C, g, -2, 2))),
        a0(Upload(Random(C, g, -1, 1))),
        k_k(Upload(Random(C, g, -1, 1))),
        k_a(Upload(Random(C, g, 0, 1))),
        v0(Upload(Random(C, g, -1, 1))),
        r_k(Upload(Random(C, g, -1, 1))),
        gn_w(Upload(Random(C, g, -1.5f, 1.5f))),
        gn_b(Upload(Random(C, g, -1, 1))) {}
  TimeMixParams View() const {
    return {w0.get(), a0.get(), k_k.get(), k_a.get(), v0.get(), r_k.get(), gn_w.get(), gn_b.get()};
  }
  DeviceBuffer<float> w0, a0, k_k, k_a, v0, r_k, gn_w, gn_b;
};

}  // namespace modrwkv::cuda::testing_util
