#include "encoders/adapter/adapter_random.h"

#include <string>

#include "engine/checkpoint/random_weights.h"

namespace modrwkv::encoders {

std::vector<OwnedTensor> MakeRandomAdapterWeights(const AdapterSpec& spec, int in,
                                                  absl::Span<const int> widths, uint64_t seed) {
  RandomTensors t(seed);
  int64_t d = in;
  size_t next = 0;
  for (const AdapterLayerSpec& l : spec.layers) {
    switch (l.op) {
      case AdapterOp::kLinear:
      case AdapterOp::kConv1d: {
        const int64_t o = next < widths.size() ? widths[next++] : d;
        const int64_t k = l.op == AdapterOp::kConv1d ? (l.kernel > 0 ? l.kernel : 3) : 1;
        const double s = FanInBound(d * k);
        if (l.op == AdapterOp::kConv1d) {
          t.Add(l.weights + ".weight", {o, d, k}, -s, s);
        } else {
          t.Add(l.weights + ".weight", {o, d}, -s, s);
        }
        if (l.bias) t.Add(l.weights + ".bias", {o}, -0.1, 0.1);
        d = o;
        break;
      }
      case AdapterOp::kPixelShuffle:
        d *= int64_t{l.factor} * l.factor;  // a block of rows side by side
        break;
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm:
        t.LayerNorm(l.weights, d);
        break;
      default:
        break;
    }
  }
  return t.Take();
}

}  // namespace modrwkv::encoders
