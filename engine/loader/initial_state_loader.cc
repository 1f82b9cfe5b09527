#include "engine/loader/initial_state_loader.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv {
namespace {

constexpr absl::string_view kPrefix = "blocks.";
constexpr absl::string_view kSuffix = ".att.time_state";

// The layer of a `blocks.{i}.att.time_state` name; nullopt for any other name.
std::optional<int> TimeStateLayer(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kPrefix) || !absl::ConsumeSuffix(&name, kSuffix)) {
    return std::nullopt;
  }
  int layer = 0;
  if (name.empty() || name.size() > 6 || !absl::SimpleAtoi(name, &layer) || layer < 0 ||
      absl::StrCat(layer) != name) {  // "07", "+7": not the names PyTorch writes
    return std::nullopt;
  }
  return layer;
}

std::string TimeStateName(int layer) { return absl::StrCat(kPrefix, layer, kSuffix); }

}  // namespace

absl::StatusOr<std::optional<InitialState>> InitialStateFromTensors(
    std::string name, const std::map<std::string, TensorView>& tensors, const ModelConfig& c) {
  bool any = false;
  for (const auto& [key, view] : tensors) {
    const std::optional<int> layer = TimeStateLayer(key);
    if (!layer) continue;
    any = true;
    if (*layer >= c.n_layer) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor %s: the model has %d layers (blocks.0 to blocks.%d)", key,
                          c.n_layer, c.n_layer - 1));
    }
  }
  if (!any) return std::nullopt;

  const int64_t H = c.n_head, N = c.head_size, C = c.n_embd;
  const std::vector<int64_t> want = {H, N, N};
  InitialState out;
  out.name = std::move(name);
  out.state.assign(static_cast<size_t>(c.StateFloats()), 0.0f);  // token shifts stay zero
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string key = TimeStateName(l);
    auto it = tensors.find(key);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "no tensor %s: a state holds one [%d,%d,%d] matrix per layer, blocks.0 to blocks.%d", key,
          H, N, N, c.n_layer - 1));
    }
    const TensorView& t = it->second;
    if (t.shape != want) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor %s has shape %s, expected %s", key,
                                                        t.ShapeString(), ShapeToString(want)));
    }
    float* wkv = out.state.data() + l * c.StateFloatsPerLayer() + C;
    ConvertToF32(t.dtype, t.data, static_cast<size_t>(H * N * N), wkv);
    for (int64_t i = 0; i < H * N * N; ++i) {
      if (!std::isfinite(wkv[i])) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor %s holds %g at [%d,%d,%d]: a state must be finite", key, wkv[i],
                            i / (N * N), i / N % N, i % N));
      }
    }
  }
  return out;
}

absl::StatusOr<InitialState> LoadInitialState(std::string name, const std::string& path,
                                              const ModelConfig& config) {
  auto in_file = [&](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  };
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(path);
  if (!ckpt.ok()) return ckpt.status();  // names the file already
  for (const auto& [key, view] : (*ckpt)->tensors()) {
    if (!TimeStateLayer(key)) {
      return in_file(absl::InvalidArgumentError(absl::StrCat(
          "tensor ", key, " is not a state tensor (blocks.{i}.att.time_state): not a state file")));
    }
  }
  absl::StatusOr<std::optional<InitialState>> state =
      InitialStateFromTensors(std::move(name), (*ckpt)->tensors(), config);
  if (!state.ok()) return in_file(state.status());
  if (!*state) {
    return in_file(absl::InvalidArgumentError(
        "no tensor blocks.{i}.att.time_state: not a state file (it holds no tensors)"));
  }
  return **std::move(state);
}

}  // namespace modrwkv
