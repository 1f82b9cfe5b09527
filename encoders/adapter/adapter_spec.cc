// Adapter specs: validation, the JSON form of the model manifest, and the official presets.
#include <set>

#include "absl/strings/str_cat.h"
#include "encoders/adapter/adapter_chain.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace modrwkv::encoders {
namespace {

struct OpInfo {
  AdapterOp op;
  const char* name;
  bool weights;
};
constexpr OpInfo kOps[] = {
    {AdapterOp::kConv1d, "conv1d", true},
    {AdapterOp::kLinear, "linear", true},
    {AdapterOp::kRelu, "relu", false},
    {AdapterOp::kGelu, "gelu", false},
    {AdapterOp::kLayerNorm, "layernorm", true},
    {AdapterOp::kResidualLayerNorm, "residual_layernorm", true},
    {AdapterOp::kPixelShuffle, "pixel_shuffle", false},
    {AdapterOp::kTransformerEncoderLayer, "transformer_encoder_layer", true},
};

const OpInfo& Info(AdapterOp op) {
  for (const OpInfo& i : kOps)
    if (i.op == op) return i;
  return kOps[0];
}

AdapterLayerSpec Conv(std::string w, int k, int s, int p, bool bias) {
  AdapterLayerSpec l;
  l.op = AdapterOp::kConv1d;
  l.weights = std::move(w);
  l.kernel = k;
  l.stride = s;
  l.padding = p;
  l.bias = bias;
  return l;
}
AdapterLayerSpec Linear(std::string w, bool bias = true) {
  AdapterLayerSpec l;
  l.op = AdapterOp::kLinear;
  l.weights = std::move(w);
  l.bias = bias;
  return l;
}
AdapterLayerSpec Act(AdapterOp op, bool tanh = false) {
  AdapterLayerSpec l;
  l.op = op;
  l.gelu_tanh = tanh;
  return l;
}
AdapterLayerSpec TransformerLayer(std::string w, int heads) {
  AdapterLayerSpec l;
  l.op = AdapterOp::kTransformerEncoderLayer;
  l.weights = std::move(w);
  l.heads = heads;
  return l;
}
AdapterLayerSpec ResidualNorm(std::string w) {
  AdapterLayerSpec l;
  l.op = AdapterOp::kResidualLayerNorm;
  l.weights = std::move(w);
  return l;
}

// Reads an integer field, keeping `*dst` when absent.
absl::Status ReadInt(const nlohmann::json& j, const char* key, const std::string& where, int* dst) {
  if (!j.contains(key)) return absl::OkStatus();
  if (!j[key].is_number_integer())
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be an integer"));
  *dst = j[key].get<int>();
  return absl::OkStatus();
}

}  // namespace

const char* AdapterOpName(AdapterOp op) { return Info(op).name; }

bool AdapterLayerSpec::has_weights() const { return Info(op).weights; }

absl::Status AdapterSpec::Validate() const {
  if (layers.empty()) return absl::InvalidArgumentError("adapter spec has no layers");
  bool any_weights = false;
  for (size_t i = 0; i < layers.size(); ++i) {
    const AdapterLayerSpec& l = layers[i];
    const std::string where = absl::StrCat("adapter layer ", i, " (", AdapterOpName(l.op), ")");
    if (l.has_weights() && l.weights.empty())
      return absl::InvalidArgumentError(absl::StrCat(where, " needs a \"weights\" tensor stem"));
    if (!l.has_weights() && !l.weights.empty())
      return absl::InvalidArgumentError(
          absl::StrCat(where, " takes no weights, got \"", l.weights, "\""));
    any_weights |= l.has_weights();
    if (l.op == AdapterOp::kConv1d) {
      if (l.kernel < 0 || l.stride < 1 || l.padding < 0)
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": kernel ", l.kernel, ", stride ", l.stride, ", padding ", l.padding,
            "; expected kernel >= 1 (or 0 = from the weights), stride "
            ">= 1, padding >= 0"));
    }
    if ((l.op == AdapterOp::kLayerNorm || l.op == AdapterOp::kResidualLayerNorm ||
         l.op == AdapterOp::kTransformerEncoderLayer) &&
        !(l.eps > 0))
      return absl::InvalidArgumentError(absl::StrCat(where, ": eps must be > 0, got ", l.eps));
    if (l.op == AdapterOp::kTransformerEncoderLayer && l.heads < 1)
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": heads must be >= 1, got ", l.heads,
          " (the head count cannot be read from the weights: take it from the model's code)"));
    if (l.op == AdapterOp::kPixelShuffle && l.factor < 1)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": factor must be >= 1, got ", l.factor));
  }
  if (!any_weights)
    return absl::InvalidArgumentError(
        "adapter spec has no layer with weights (its widths could not be known)");
  return absl::OkStatus();
}

absl::StatusOr<AdapterSpec> ParseAdapterSpec(const nlohmann::json& json) {
  if (!json.is_array())
    return absl::InvalidArgumentError("adapter spec must be a JSON array of layer objects");
  AdapterSpec spec;
  for (size_t i = 0; i < json.size(); ++i) {
    const nlohmann::json& j = json[i];
    std::string where = absl::StrCat("adapter layer ", i);
    if (!j.is_object() || !j.contains("op") || !j["op"].is_string())
      return absl::InvalidArgumentError(
          absl::StrCat(where, " must be an object with a string \"op\""));
    const std::string name = j["op"].get<std::string>();
    const OpInfo* info = nullptr;
    for (const OpInfo& o : kOps)
      if (name == o.name) info = &o;
    if (info == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown op \"", name,
                       "\"; expected conv1d, linear, relu, gelu, layernorm, residual_layernorm, "
                       "pixel_shuffle or transformer_encoder_layer"));
    where = absl::StrCat(where, " (", name, ")");
    std::set<std::string> allowed = {"op"};
    AdapterLayerSpec l;
    l.op = info->op;
    if (info->weights) allowed.insert("weights");
    if (j.contains("weights")) {
      if (!j["weights"].is_string())
        return absl::InvalidArgumentError(absl::StrCat(where, ": \"weights\" must be a string"));
      l.weights = j["weights"].get<std::string>();
    }
    switch (l.op) {
      case AdapterOp::kConv1d:
        allowed.insert({"kernel", "stride", "padding", "bias"});
        MODRWKV_RETURN_IF_ERROR(ReadInt(j, "kernel", where, &l.kernel));
        MODRWKV_RETURN_IF_ERROR(ReadInt(j, "stride", where, &l.stride));
        MODRWKV_RETURN_IF_ERROR(ReadInt(j, "padding", where, &l.padding));
        [[fallthrough]];
      case AdapterOp::kLinear:
        allowed.insert("bias");
        if (j.contains("bias")) {
          if (!j["bias"].is_boolean())
            return absl::InvalidArgumentError(absl::StrCat(where, ": \"bias\" must be a boolean"));
          l.bias = j["bias"].get<bool>();
        }
        break;
      case AdapterOp::kGelu:
        allowed.insert("approximate");
        if (j.contains("approximate")) {
          const nlohmann::json& a = j["approximate"];
          if (!a.is_string() || (a != "tanh" && a != "none"))
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": \"approximate\" must be \"tanh\" or \"none\""));
          l.gelu_tanh = a == "tanh";
        }
        break;
      case AdapterOp::kTransformerEncoderLayer:
        allowed.insert({"heads", "activation", "norm_first"});
        if (!j.contains("heads"))
          return absl::InvalidArgumentError(
              absl::StrCat(where,
                           ": \"heads\" is required (the head count cannot be read from "
                           "the weights; the official SpeechAdapter has 8)"));
        MODRWKV_RETURN_IF_ERROR(ReadInt(j, "heads", where, &l.heads));
        if (j.contains("activation")) {
          const nlohmann::json& a = j["activation"];
          if (!a.is_string() || (a != "relu" && a != "gelu"))
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": \"activation\" must be \"relu\" or \"gelu\""));
          l.ffn_gelu = a == "gelu";
        }
        if (j.contains("norm_first")) {
          if (!j["norm_first"].is_boolean())
            return absl::InvalidArgumentError(
                absl::StrCat(where, ": \"norm_first\" must be a boolean"));
          l.norm_first = j["norm_first"].get<bool>();
        }
        [[fallthrough]];
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm:
        allowed.insert("eps");
        if (j.contains("eps")) {
          if (!j["eps"].is_number())
            return absl::InvalidArgumentError(absl::StrCat(where, ": \"eps\" must be a number"));
          l.eps = j["eps"].get<float>();
        }
        break;
      case AdapterOp::kPixelShuffle:
        allowed.insert("factor");
        MODRWKV_RETURN_IF_ERROR(ReadInt(j, "factor", where, &l.factor));
        break;
      case AdapterOp::kRelu:
        break;
    }
    for (const auto& [key, value] : j.items())
      if (!allowed.count(key))
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key \"", key, "\" for this op"));
    spec.layers.push_back(std::move(l));
  }
  MODRWKV_RETURN_IF_ERROR(spec.Validate());
  return spec;
}

absl::StatusOr<AdapterSpec> ParseAdapterSpec(const std::string& json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("adapter spec is not valid JSON");
  return ParseAdapterSpec(j);
}

std::string AdapterSpecToJson(const AdapterSpec& spec) {
  nlohmann::json out = nlohmann::json::array();
  for (const AdapterLayerSpec& l : spec.layers) {
    nlohmann::json j;
    j["op"] = AdapterOpName(l.op);
    if (l.has_weights()) j["weights"] = l.weights;
    switch (l.op) {
      case AdapterOp::kConv1d:
        j["kernel"] = l.kernel;
        j["stride"] = l.stride;
        j["padding"] = l.padding;
        j["bias"] = l.bias;
        break;
      case AdapterOp::kLinear:
        j["bias"] = l.bias;
        break;
      case AdapterOp::kGelu:
        j["approximate"] = l.gelu_tanh ? "tanh" : "none";
        break;
      case AdapterOp::kTransformerEncoderLayer:
        j["heads"] = l.heads;
        j["activation"] = l.ffn_gelu ? "gelu" : "relu";
        j["norm_first"] = l.norm_first;
        [[fallthrough]];
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm:
        j["eps"] = l.eps;
        break;
      case AdapterOp::kPixelShuffle:
        j["factor"] = l.factor;
        break;
      case AdapterOp::kRelu:
        break;
    }
    out.push_back(std::move(j));
  }
  return out.dump();
}

AdapterSpec VisionAdapterA() {
  return {{Linear("proj.0"), Act(AdapterOp::kRelu), Linear("proj.2"), ResidualNorm("pre_norm")}};
}

AdapterSpec VisionAdapterB(bool conv) {
  AdapterSpec s{
      {Linear("mlp.0"), Act(AdapterOp::kRelu), Linear("mlp.2"), ResidualNorm("pre_norm")}};
  if (conv) s.layers.insert(s.layers.begin(), Conv("conv", 3, 2, 0, /*bias=*/false));
  return s;
}

AdapterSpec SpeechAdapterA(int conv_padding) {
  return {{Conv("conv", 3, 2, conv_padding, /*bias=*/true), Linear("proj.0"), Act(AdapterOp::kRelu),
           Linear("proj.2")}};
}

AdapterSpec SpeechAdapterATransformer(int heads) {
  return {{Conv("conv", 3, 2, 0, /*bias=*/true), TransformerLayer("transformer", heads),
           Linear("linear")}};
}

AdapterSpec ConvProjectorC() {
  return {{Conv("conv", 6, 5, 0, /*bias=*/false), Linear("mlp.0"),
           Act(AdapterOp::kGelu, /*tanh=*/false), Linear("mlp.2")}};
}

AdapterSpec PixelShuffleProjectorC() {
  AdapterLayerSpec shuffle;
  shuffle.op = AdapterOp::kPixelShuffle;
  shuffle.factor = 4;
  return {{shuffle, Linear("proj", /*bias=*/false)}};
}

AdapterSpec ConvCompressionAdapter(int kernel, int stride) {
  AdapterSpec s = VisionAdapterB(/*conv=*/true);
  s.layers[0].kernel = kernel;
  s.layers[0].stride = stride;
  return s;
}

}  // namespace modrwkv::encoders
