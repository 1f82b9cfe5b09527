#include "encoders/multimodal/manifest.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "encoders/adapter/adapter_chain.h"
#include "nlohmann/json.hpp"

namespace modrwkv::encoders {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(kManifestName, ": \"", key, "\" ", what));
}

absl::StatusOr<std::string> OptString(const json& j, const char* key, const std::string& def) {
  if (!j.contains(key)) return def;
  if (!j[key].is_string()) return Bad(key, "must be a string");
  return j[key].get<std::string>();
}

absl::StatusOr<std::vector<int32_t>> OptIds(const json& j, const char* key) {
  std::vector<int32_t> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_array()) return Bad(key, "must be an array of token ids");
  for (const json& v : j[key]) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return Bad(key, "must hold non-negative integer token ids");
    }
    out.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return out;
}

std::string Resolve(const std::string& dir, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (fs::path(dir) / p).lexically_normal().string();
}

absl::StatusOr<VisionManifest> ParseVision(const json& v, const std::string& dir) {
  if (!v.is_object()) return Bad("vision", "must be an object");
  VisionManifest m;
  absl::StatusOr<std::string> s = OptString(v, "encoder", "");
  if (!s.ok()) return s.status();
  if (s->empty()) return Bad("vision.encoder", "is required (the encoder's Hugging Face folder)");
  m.encoder = Resolve(dir, *s);
  s = OptString(v, "splice", "");
  if (!s.ok()) return s.status();
  if (*s == "prepend") {
    m.splice = SpliceMode::kPrepend;
  } else if (*s == "replace_pad") {
    m.splice = SpliceMode::kReplacePad;
  } else if (!s->empty()) {
    return Bad("vision.splice", absl::StrCat("is '", *s, "', expected 'prepend' or 'replace_pad'"));
  }
  if (v.contains("adapter")) {
    absl::StatusOr<std::string> a = ManifestAdapter(v["adapter"], "vision.adapter");
    if (!a.ok()) return a.status();
    m.adapter_json = *std::move(a);
  }
  if (v.contains("feature_layer")) {
    if (!v["feature_layer"].is_number_integer())
      return Bad("vision.feature_layer", "must be an integer");
    m.feature_layer = v["feature_layer"].get<int>();
  }
  if (v.contains("drop_class_token")) {
    if (!v["drop_class_token"].is_boolean())
      return Bad("vision.drop_class_token", "must be true or false");
    m.drop_class_token = v["drop_class_token"].get<bool>();
  }
  struct Marker {
    const char* key;
    std::string* text;
    int32_t* id;
  };
  for (const Marker& k : {Marker{"image_start", &m.image_start, &m.image_start_id},
                          Marker{"image_end", &m.image_end, &m.image_end_id}}) {
    if (!v.contains(k.key)) continue;
    const json& t = v[k.key];
    if (t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() <= INT32_MAX) {
      *k.id = static_cast<int32_t>(t.get<int64_t>());
    } else if (t.is_string()) {
      *k.text = t.get<std::string>();
    } else {
      return Bad(absl::StrCat("vision.", k.key), "must be a token's text or a token id");
    }
  }
  return m;
}

absl::StatusOr<AudioManifest> ParseAudio(const json& v, const std::string& dir) {
  if (!v.is_object()) return Bad("audio", "must be an object");
  for (const auto& [key, value] : v.items()) {
    if (key != "encoder" && key != "adapter") {
      return Bad(absl::StrCat("audio.", key),
                 "is not a key of \"audio\" (known: encoder, adapter)");
    }
  }
  AudioManifest m;
  absl::StatusOr<std::string> s = OptString(v, "encoder", "");
  if (!s.ok()) return s.status();
  if (s->empty()) return Bad("audio.encoder", "is required (the encoder's Hugging Face folder)");
  m.encoder = Resolve(dir, *s);
  if (v.contains("adapter")) {
    absl::StatusOr<std::string> a = ManifestAdapter(v["adapter"], "audio.adapter");
    if (!a.ok()) return a.status();
    m.adapter_json = *std::move(a);
  }
  return m;
}

// A positive integer no larger than 2^20 (bounds every product of them the pipeline forms).
absl::StatusOr<int> PositiveInt(const json& v, const std::string& key) {
  constexpr int64_t kMax = int64_t{1} << 20;
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > kMax) {
    return Bad(key, absl::StrCat("must be an integer in 1..", kMax));
  }
  return static_cast<int>(v.get<int64_t>());
}

absl::StatusOr<TimeSeriesManifest> ParseTimeSeries(const json& v) {
  if (!v.is_object()) return Bad("time_series", "must be an object");
  static const char* kKnown[] = {"encoder",   "channels",   "patch", "dilations",
                                 "horizon",   "max_length", "eps",   "prompt",
                                 "quantiles", "baseline",   "heads", "rope_theta"};
  for (const auto& [key, value] : v.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return Bad(absl::StrCat("time_series.", key),
                 "is not a key of \"time_series\" (known: encoder, channels, patch, dilations, "
                 "horizon, max_length, eps, prompt, quantiles, baseline, heads, rope_theta)");
    }
  }
  TimeSeriesManifest m;
  if (!v.contains("encoder")) {
    return Bad("time_series.encoder", "is required (\"wavenet\" or \"timer\")");
  }
  if (!v["encoder"].is_string() || (v["encoder"].get<std::string>() != "wavenet" &&
                                    v["encoder"].get<std::string>() != "timer")) {
    return Bad("time_series.encoder",
               absl::StrCat("is ", v["encoder"].dump(), ", expected \"wavenet\" or \"timer\""));
  }
  m.encoder = v["encoder"].get<std::string>();
  const bool timer = m.encoder == "timer";
  for (const char* key : {"channels", timer ? "heads" : "dilations", "horizon", "max_length"}) {
    if (!v.contains(key)) return Bad(absl::StrCat("time_series.", key), "is required");
  }
  const std::vector<const char*> other_encoders_keys =
      timer ? std::vector<const char*>{"dilations"}
            : std::vector<const char*>{"heads", "rope_theta"};
  for (const char* key : other_encoders_keys) {
    if (v.contains(key)) {
      return Bad(absl::StrCat("time_series.", key),
                 absl::StrCat("does not apply to the ", m.encoder, " encoder"));
    }
  }
  absl::StatusOr<int> n = PositiveInt(v["channels"], "time_series.channels");
  if (!n.ok()) return n.status();
  m.channels = *n;
  if (v.contains("patch")) {
    n = PositiveInt(v["patch"], "time_series.patch");
    if (!n.ok()) return n.status();
    m.patch = *n;
  }
  if (timer) {
    n = PositiveInt(v["heads"], "time_series.heads");
    if (!n.ok()) return n.status();
    m.heads = *n;
    if (v.contains("rope_theta")) {
      const json& t = v["rope_theta"];
      if (!t.is_number() || !(t.get<double>() > 1) || !std::isfinite(t.get<float>())) {
        return Bad("time_series.rope_theta", "must be a finite number > 1");
      }
      m.rope_theta = t.get<float>();
    }
  } else {
    const json& d = v["dilations"];
    if (!d.is_array() || d.empty()) {
      return Bad("time_series.dilations", "must be a non-empty array (one dilation per layer)");
    }
    for (size_t i = 0; i < d.size(); ++i) {
      n = PositiveInt(d[i], absl::StrCat("time_series.dilations[", i, "]"));
      if (!n.ok()) return n.status();
      m.dilations.push_back(*n);
    }
  }
  n = PositiveInt(v["horizon"], "time_series.horizon");
  if (!n.ok()) return n.status();
  m.horizon = *n;
  n = PositiveInt(v["max_length"], "time_series.max_length");
  if (!n.ok()) return n.status();
  m.max_length = *n;
  if (m.max_length < m.patch) {
    return Bad("time_series.max_length",
               absl::StrCat("is ", m.max_length, ", less than one patch (", m.patch, " steps)"));
  }
  if (v.contains("eps")) {
    const json& e = v["eps"];
    if (!e.is_number() || !(e.get<double>() > 0) || !std::isfinite(e.get<float>())) {
      return Bad("time_series.eps", "must be a positive finite number");
    }
    m.eps = e.get<float>();
  }
  absl::StatusOr<std::string> s = OptString(v, "prompt", "");
  if (!s.ok()) return Bad("time_series.prompt", "must be a string");
  m.prompt = *std::move(s);
  if (v.contains("quantiles")) {
    const json& q = v["quantiles"];
    if (!q.is_array() || q.size() > 99) {
      return Bad("time_series.quantiles", "must be an array of at most 99 levels");
    }
    for (size_t i = 0; i < q.size(); ++i) {
      const float level = q[i].is_number() ? q[i].get<float>() : -1;
      if (!(level > 0 && level < 1) || (i > 0 && !(level > m.quantiles.back()))) {
        return Bad(absl::StrCat("time_series.quantiles[", i, "]"),
                   absl::StrCat("is ", q[i].dump(), ": levels must increase, each in (0, 1)"));
      }
      m.quantiles.push_back(level);
    }
  }
  s = OptString(v, "baseline", "none");
  if (!s.ok() || (*s != "none" && *s != "last")) {
    return Bad("time_series.baseline", "must be \"none\" or \"last\"");
  }
  m.baseline = *std::move(s);
  return m;
}

}  // namespace

absl::StatusOr<std::string> ManifestAdapter(const json& value, absl::string_view key) {
  if (value.is_array()) return value.dump();
  if (!value.is_string()) {
    return Bad(key, "must be an array of layers or the name of a preset");
  }
  static const auto* presets = new std::map<std::string, AdapterSpec (*)()>{
      {"vision_a", [] { return VisionAdapterA(); }},
      {"vision_b", [] { return VisionAdapterB(false); }},
      {"vision_b_conv", [] { return VisionAdapterB(true); }},
      {"speech_a", [] { return SpeechAdapterA(2); }},
      {"speech_a_pad0", [] { return SpeechAdapterA(0); }},
      {"speech_a_transformer", [] { return SpeechAdapterATransformer(8); }},
      {"conv_projector_c", [] { return ConvProjectorC(); }},
      {"pixel_shuffle_c", [] { return PixelShuffleProjectorC(); }},
      {"conv_k3s2", [] { return ConvCompressionAdapter(3, 2); }},
      {"conv_k4s3", [] { return ConvCompressionAdapter(4, 3); }},
      {"conv_k5s4", [] { return ConvCompressionAdapter(5, 4); }},
  };
  const std::string name = value.get<std::string>();
  auto it = presets->find(name);
  if (it == presets->end()) {
    std::string known;
    for (const auto& [n, f] : *presets) absl::StrAppend(&known, known.empty() ? "" : ", ", n);
    return Bad(key, absl::StrCat("names no preset '", name, "' (known: ", known, ")"));
  }
  return AdapterSpecToJson(it->second());
}

absl::StatusOr<ModelManifest> ParseManifest(std::string_view json_text, const std::string& dir) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kManifestName, " in ", dir, " is not a JSON object"));
  }
  static const char* kKnown[] = {"format",        "checkpoint",  "vocab",
                                 "chat_template", "stop_tokens", "ban_tokens",
                                 "vision",        "audio",       "time_series"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return Bad(key,
                 "is not a manifest key (known: format, checkpoint, vocab, chat_template, "
                 "stop_tokens, ban_tokens, vision, audio, time_series)");
    }
  }
  if (j.contains("format") && (!j["format"].is_number_integer() || j["format"].get<int>() != 1)) {
    return Bad("format", "must be 1 (the only manifest format this server reads)");
  }
  ModelManifest m;
  m.dir = dir;
  absl::StatusOr<std::string> s = OptString(j, "checkpoint", "");
  if (!s.ok()) return s.status();
  if (s->empty()) return Bad("checkpoint", "is required (the model's .pth or .safetensors file)");
  m.checkpoint = Resolve(dir, *s);
  s = OptString(j, "vocab", "");
  if (!s.ok()) return s.status();
  m.vocab = Resolve(dir, *s);
  s = OptString(j, "chat_template", "");
  if (!s.ok()) return s.status();
  m.chat_template = *s;
  if (!m.chat_template.empty() && m.chat_template.find("{text}") == std::string::npos) {
    return Bad("chat_template", "must contain {text} (where the user's message goes)");
  }
  absl::StatusOr<std::vector<int32_t>> ids = OptIds(j, "stop_tokens");
  if (!ids.ok()) return ids.status();
  m.stop_tokens = *std::move(ids);
  ids = OptIds(j, "ban_tokens");
  if (!ids.ok()) return ids.status();
  m.ban_tokens = *std::move(ids);
  if (j.contains("vision")) {
    absl::StatusOr<VisionManifest> v = ParseVision(j["vision"], dir);
    if (!v.ok()) return v.status();
    m.vision = *std::move(v);
  }
  if (j.contains("audio")) {
    absl::StatusOr<AudioManifest> a = ParseAudio(j["audio"], dir);
    if (!a.ok()) return a.status();
    m.audio = *std::move(a);
  }
  if (j.contains("time_series")) {
    absl::StatusOr<TimeSeriesManifest> t = ParseTimeSeries(j["time_series"]);
    if (!t.ok()) return t.status();
    m.time_series = *std::move(t);
  }
  return m;
}

absl::StatusOr<ModelManifest> LoadManifest(const std::string& path) {
  std::error_code ec;
  const fs::path file =
      fs::is_directory(path, ec) ? fs::path(path) / kManifestName : fs::path(path);
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read the model manifest ", file.string()));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseManifest(ss.str(), file.parent_path().string());
}

}  // namespace modrwkv::encoders
