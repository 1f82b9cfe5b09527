// Checkpoint generation detection from key names (facts from the official WorldRWKV code:
// generation A infer/worldmodel.py splits off `modality.world_encoder.*`; B/C split `llm.`,
// `proj.`, `encoder.`).
#include "encoders/adapter/checkpoint_layout.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
namespace {

constexpr char kAPrefix[] = "modality.world_encoder.";
constexpr char kAAdapter[] = "modality.world_encoder.adapter.";
constexpr char kAEncoder[] = "modality.world_encoder.model.";

bool HasPrefix(const std::map<std::string, TensorView>& t, const std::string& prefix) {
  auto it = t.lower_bound(prefix);
  return it != t.end() && absl::StartsWith(it->first, prefix);
}

// "a, b, c, ... (N keys)" for error messages.
std::string SomeKeys(const std::map<std::string, TensorView>& t) {
  std::vector<std::string> names;
  for (const auto& [name, view] : t) {
    if (names.size() == 6) break;
    names.push_back(name);
  }
  if (names.empty()) return "no keys at all";
  return absl::StrCat(absl::StrJoin(names, ", "), t.size() > names.size() ? ", ..." : "", " (",
                      t.size(), " keys)");
}

absl::StatusOr<AdapterSpec> AdapterA(const std::map<std::string, TensorView>& t) {
  const std::string p = kAAdapter;
  // The earlier SpeechAdapter (6c39cdb): conv -> TransformerEncoderLayer(nhead=8) -> linear.
  if (t.count(p + "conv.weight") && t.count(p + "transformer.self_attn.in_proj_weight"))
    return SpeechAdapterATransformer(/*heads=*/8);
  if (t.count(p + "conv.weight")) return SpeechAdapterA(/*conv_padding=*/2);
  if (t.count(p + "proj.0.weight") && t.count(p + "pre_norm.weight")) return VisionAdapterA();
  return absl::InvalidArgumentError(absl::StrCat(
      "generation A checkpoint: the adapter tensors under ", p,
      " are neither a vision adapter (proj.0.weight, proj.2.weight, pre_norm.weight) nor a "
      "speech adapter (conv.weight, proj.0.weight, proj.2.weight; or conv.weight, "
      "transformer.*, linear.weight); found ",
      SomeKeys(StripPrefix(t, p))));
}

absl::StatusOr<AdapterSpec> AdapterBC(const std::map<std::string, TensorView>& t, char* gen) {
  if (t.count("proj.proj.weight")) {
    *gen = 'C';
    return PixelShuffleProjectorC();
  }
  if (!t.count("proj.mlp.0.weight") || !t.count("proj.mlp.2.weight"))
    return absl::InvalidArgumentError(absl::StrCat(
        "generation B checkpoint: expected proj.mlp.0.weight and proj.mlp.2.weight (or "
        "proj.proj.weight, a generation C pixel-shuffle projector); found ",
        SomeKeys(StripPrefix(t, "proj."))));
  auto conv = t.find("proj.conv.weight");
  if (conv != t.end() && conv->second.shape.size() == 3 && conv->second.shape[2] == 6) {
    *gen = 'C';  // VlProj: conv k6 s5 -> mlp with GELU; its pre_norm is never applied
    return ConvProjectorC();
  }
  if (!t.count("proj.pre_norm.weight"))
    return absl::InvalidArgumentError(
        "generation B checkpoint: proj.mlp.* is present but proj.pre_norm.weight is missing");
  return VisionAdapterB(/*conv=*/conv != t.end());
}

}  // namespace

std::map<std::string, TensorView> StripPrefix(const std::map<std::string, TensorView>& tensors,
                                              const std::string& prefix) {
  std::map<std::string, TensorView> out;
  for (auto it = tensors.lower_bound(prefix);
       it != tensors.end() && absl::StartsWith(it->first, prefix); ++it) {
    TensorView v = it->second;
    v.name = it->first.substr(prefix.size());
    out.emplace(v.name, std::move(v));
  }
  return out;
}

std::map<std::string, TensorView> LlmTensors(const CheckpointLayout& layout,
                                             const std::map<std::string, TensorView>& tensors) {
  std::map<std::string, TensorView> out = StripPrefix(tensors, layout.llm_prefix);
  if (layout.llm_prefix.empty()) {  // every modality.* key (vision, speech, time series)
    for (auto it = out.begin(); it != out.end();)
      it = absl::StartsWith(it->first, "modality.") ? out.erase(it) : std::next(it);
  }
  return out;
}

absl::StatusOr<CheckpointLayout> DetectCheckpointLayout(
    const std::map<std::string, TensorView>& tensors) {
  CheckpointLayout layout;
  if (tensors.count("emb.weight")) {
    if (!HasPrefix(tensors, kAPrefix)) {
      layout.generation = 'T';
      return layout;
    }
    if (!HasPrefix(tensors, kAAdapter))
      return absl::InvalidArgumentError(absl::StrCat(
          "generation A checkpoint (emb.weight, ", kAPrefix, "*) without adapter tensors ",
          kAAdapter, "*; found ", SomeKeys(StripPrefix(tensors, kAPrefix))));
    layout.generation = 'A';
    layout.adapter_prefix = kAAdapter;
    if (HasPrefix(tensors, kAEncoder)) layout.encoder_prefix = kAEncoder;
    MODRWKV_ASSIGN_OR_RETURN(layout.adapter, AdapterA(tensors));
    return layout;
  }
  if (tensors.count("llm.emb.weight")) {
    layout.generation = 'B';
    layout.llm_prefix = "llm.";
    if (!HasPrefix(tensors, "proj."))
      return absl::NotFoundError(
          "generation B checkpoint (llm.*) holds no adapter tensors (proj.*): the official "
          "trainer saves proj.* only when the adapter was trained in that run, so the adapter "
          "must come from the checkpoint of the run that trained it (a separate file)");
    layout.adapter_prefix = "proj.";
    if (HasPrefix(tensors, "encoder.model.")) layout.encoder_prefix = "encoder.model.";
    MODRWKV_ASSIGN_OR_RETURN(layout.adapter, AdapterBC(tensors, &layout.generation));
    return layout;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown checkpoint layout: expected emb.weight and modality.world_encoder.adapter.* "
      "(generation A), llm.emb.weight and proj.* (generation B), or emb.weight alone (a text-only "
      "RWKV7 model); found keys like ",
      SomeKeys(tensors)));
}

}  // namespace modrwkv::encoders
