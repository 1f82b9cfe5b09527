// Seeded random RWKV7 weights, bit-identical to tools/golden/random_weights.py (spec in
// docs/random-weights.md). Used by the demo model, the golden tests and the benchmarks.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv {

struct RandomModelSpec {
  int n_layer = 2;
  int n_embd = 128;  // multiple of 64
  int vocab_size = 65536;
  uint64_t seed = 1;
  DType dtype = DType::kF32;  // kBF16: every tensor rounded to bf16

  absl::Status Validate() const;
};

// Named shapes: "tiny" (L2 C128), "0.1b" (L12 C768), "0.4b" (L24 C1024), "1.5b" (L24 C2048),
// "2.9b" (L32 C2560), "7.2b" (L32 C4096): the released RWKV7 models' widths and depths.
absl::StatusOr<RandomModelSpec> RandomSpecForShape(const std::string& shape);

// LoRA ranks of the official training code for width C.
struct LoraRanks {
  int w, a, v, g;
};
LoraRanks LoraRanksFor(int n_embd);

// The generator of the spec: element i of the tensor `name`, in [0, 1).
uint64_t SplitMix64(uint64_t x);
uint64_t Fnv1a64(const std::string& s);

// Element i of tensor `name` under `seed` (docs/random-weights.md): float32(lo + (hi - lo) * u_i)
// with u_i = (SplitMix64(key + i) >> 40) / 2^24 and key = RandomTensorKey(seed, name).
uint64_t RandomTensorKey(uint64_t seed, const std::string& name);
inline float RandomElement(uint64_t key, int64_t i, double lo, double hi) {
  const double u =
      static_cast<double>(SplitMix64(key + static_cast<uint64_t>(i)) >> 40) * (1.0 / 16777216.0);
  return static_cast<float>(lo + (hi - lo) * u);
}
// The n elements of tensor `name`.
std::vector<float> RandomUniform(const std::string& name, int64_t n, double lo, double hi,
                                 uint64_t seed);

// 1/sqrt(fan_in): the bound of a weight's symmetric range.
inline double FanInBound(int64_t fan_in) { return 1.0 / std::sqrt(static_cast<double>(fan_in)); }

// Named tensors of RandomUniform values (rounded to bf16 when asked), in the order added: what
// the random RWKV7, encoder and adapter models are built of. Large tensors are filled by all
// cores (every element is a function of its index alone: the same bytes).
class RandomTensors {
 public:
  explicit RandomTensors(uint64_t seed, DType dtype = DType::kF32) : seed_(seed), dtype_(dtype) {}

  void Add(const std::string& name, std::vector<int64_t> shape, double lo, double hi);
  // name.weight [d] in [0.8, 1.2), name.bias [d] in [-0.1, 0.1).
  void LayerNorm(const std::string& name, int64_t d);
  // name.weight [out][in] in +-1/sqrt(in), and unless !bias name.bias [out] in [-0.1, 0.1).
  void Linear(const std::string& name, int64_t out, int64_t in, bool bias = true);

  std::vector<OwnedTensor> Take() { return std::move(tensors_); }

 private:
  uint64_t seed_;
  DType dtype_;
  std::vector<OwnedTensor> tensors_;
};

// All tensors, BlinkDL names, in checkpoint order.
absl::StatusOr<std::vector<OwnedTensor>> MakeRandomRwkv7(const RandomModelSpec& spec);

// Views over owned tensors, in the form checkpoint readers produce.
std::map<std::string, TensorView> ViewsOf(const std::vector<OwnedTensor>& tensors);

// The values of the f32 tensor `name` of `tensors` (empty when there is none).
std::vector<float> F32Values(const std::vector<OwnedTensor>& tensors, const std::string& name);

}  // namespace modrwkv
