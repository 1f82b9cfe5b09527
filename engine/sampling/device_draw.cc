// The reference definition of sampling on the device (see device_draw.h): plain, sorting C++.
#include "engine/sampling/device_draw.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace modrwkv {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kTopPRelTolerance = 1e-6;  // as the Sampler's

struct Kept {
  int32_t argmax = -1;        // >= 0: the draw is decided (greedy, fallback or +inf)
  std::vector<float> p;       // [V] relative probabilities (step 3)
  std::vector<uint8_t> kept;  // [V] step 4
};

Kept Select(absl::Span<const float> logits, const DeviceDraw& d) {
  Kept k;
  const int32_t n = static_cast<int32_t>(logits.size());
  int32_t best = -1;
  for (int32_t i = 0; i < n; ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == -kInf) continue;
    if (best < 0 || v > logits[best]) best = i;
  }
  if (best < 0) {
    k.argmax = d.fallback;
    return k;
  }
  const float max = logits[best];
  const float scale = 1.0f / d.temperature;  // +inf for a temperature too small to divide by
  if (!(scale < kInf) || max == kInf) {
    k.argmax = best;
    return k;
  }
  k.p.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    const float v = logits[i];
    k.p[i] = std::isnan(v) || v == -kInf ? 0.0f : std::exp((v - max) * scale);
  }
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return k.p[a] > k.p[b]; });
  size_t count = d.top_k > 0 && d.top_k < n ? static_cast<size_t>(d.top_k) : order.size();
  if (d.top_p < 1.0f) {
    double total = 0;
    for (size_t t = 0; t < count; ++t) total += k.p[order[t]];
    const double need = d.top_p * total * (1.0 - kTopPRelTolerance);
    double cum = 0;
    for (size_t t = 0; t < count; ++t) {
      cum += k.p[order[t]];
      if (cum >= need) {
        count = t + 1;
        break;
      }
    }
  }
  k.kept.assign(n, 0);
  bool any = false;
  for (size_t t = 0; t < count; ++t) {
    if (k.p[order[t]] < d.min_p) continue;
    k.kept[order[t]] = 1;
    any = true;
  }
  if (!any) k.argmax = best;  // min_p above the top token's 1
  return k;
}

}  // namespace

void ApplyLogitEdits(absl::Span<float> logits, absl::Span<const LogitEdit> edits) {
  for (const LogitEdit& e : edits) {
    if (e.token < 0 || static_cast<size_t>(e.token) >= logits.size()) continue;
    float& v = logits[e.token];
    if (e.banned) {
      v = -kInf;
      continue;
    }
    v = v > 0 ? v / e.repetition : v * e.repetition;
    v -= e.subtract;
    v += e.add;
  }
}

int32_t ReferenceDeviceDraw(absl::Span<const float> logits, const DeviceDraw& d) {
  const Kept k = Select(logits, d);
  if (k.argmax >= 0) return k.argmax;
  double total = 0;
  int32_t last = -1;
  for (size_t i = 0; i < k.p.size(); ++i) {
    if (!k.kept[i]) continue;
    total += k.p[i];
    last = static_cast<int32_t>(i);
  }
  const double target = d.u * total;
  double cum = 0;
  for (size_t i = 0; i < k.p.size(); ++i) {
    if (!k.kept[i]) continue;
    cum += k.p[i];
    if (cum > target) return static_cast<int32_t>(i);
  }
  return last;
}

DeviceLogprobs ReferenceDeviceLogprobs(absl::Span<const float> logits, int32_t token, int top_n) {
  DeviceLogprobs out;
  float max = -kInf;
  for (float v : logits) {
    if (v > max) max = v;  // NaN never compares greater
  }
  const bool in_range = token >= 0 && static_cast<size_t>(token) < logits.size();
  if (!(max > -kInf && max < kInf)) {
    out.logprob = in_range && logits[token] == max && max == kInf ? 0.0f : -kInf;
    return out;
  }
  double z = 0;
  for (float v : logits) {
    if (v > -kInf) z += std::exp(v - max);
  }
  const double log_z = std::log(z);
  auto logprob = [&](float v) { return static_cast<float>(static_cast<double>(v) - max - log_z); };
  out.logprob = in_range ? logprob(logits[token]) : -kInf;
  std::vector<int32_t> order;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > -kInf) order.push_back(static_cast<int32_t>(i));
  }
  const size_t n =
      std::min(order.size(), static_cast<size_t>(std::clamp(top_n, 0, kMaxDeviceTopLogprobs)));
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  out.count = static_cast<int32_t>(n);
  for (size_t t = 0; t < n; ++t) {
    out.ids[t] = order[t];
    out.values[t] = logprob(logits[order[t]]);
  }
  return out;
}

std::vector<double> DeviceDrawProbabilities(absl::Span<const float> logits, const DeviceDraw& d) {
  std::vector<double> out(logits.size(), 0.0);
  const Kept k = Select(logits, d);
  if (k.argmax >= 0) {
    if (static_cast<size_t>(k.argmax) < out.size()) out[k.argmax] = 1.0;
    return out;
  }
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += k.kept[i] ? k.p[i] : 0.0;
  for (size_t i = 0; i < out.size(); ++i) out[i] = k.kept[i] ? k.p[i] / total : 0.0;
  return out;
}

}  // namespace modrwkv
