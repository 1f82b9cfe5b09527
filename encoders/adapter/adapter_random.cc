#include "encoders/adapter/adapter_random.h"

#include <cmath>
#include <cstring>
#include <string>

#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomAdapterWeights(const AdapterSpec& spec, int in,
                                                  absl::Span<const int> widths, uint64_t seed) {
  std::vector<OwnedTensor> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double lo, double hi) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const uint64_t key = SplitMix64(seed ^ Fnv1a64(name));
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const double u = static_cast<double>(SplitMix64(key + static_cast<uint64_t>(i)) >> 40) *
                       (1.0 / 16777216.0);
      v[static_cast<size_t>(i)] = static_cast<float>(lo + (hi - lo) * u);
    }
    OwnedTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    out.push_back(std::move(t));
  };
  int64_t d = in;
  size_t next = 0;
  for (const AdapterLayerSpec& l : spec.layers) {
    switch (l.op) {
      case AdapterOp::kLinear:
      case AdapterOp::kConv1d: {
        const int64_t o = next < widths.size() ? widths[next++] : d;
        const int64_t k = l.op == AdapterOp::kConv1d ? (l.kernel > 0 ? l.kernel : 3) : 1;
        const double s = 1.0 / std::sqrt(static_cast<double>(d * k));
        if (l.op == AdapterOp::kConv1d) {
          add(l.weights + ".weight", {o, d, k}, -s, s);
        } else {
          add(l.weights + ".weight", {o, d}, -s, s);
        }
        if (l.bias) add(l.weights + ".bias", {o}, -0.1, 0.1);
        d = o;
        break;
      }
      case AdapterOp::kPixelShuffle:
        d *= int64_t{l.factor} * l.factor;  // a block of rows side by side
        break;
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm:
        add(l.weights + ".weight", {d}, 0.8, 1.2);
        add(l.weights + ".bias", {d}, -0.1, 0.1);
        break;
      default:
        break;
    }
  }
  return out;
}

}  // namespace modrwkv::encoders
