// preprocessor_config.json parsing and the resize -> center crop -> rescale -> normalise pipeline,
// in the order and arithmetic of transformers 4.44's SiglipImageProcessor / CLIPImageProcessor.
#include "encoders/image/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "encoders/image/pil_resample.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace modrwkv::encoders {
namespace {

using nlohmann::json;

constexpr int kMaxSide = 8192;  // generous bound on configured sizes

absl::Status KeyError(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("preprocessor_config.json: \"", key, "\" ", what));
}

// Reads an optional bool; null (as in "do_convert_rgb": null) keeps the default.
absl::Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return KeyError(key, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::StatusOr<int> ReadSide(const json& v, const std::string& key) {
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > kMaxSide) {
    return KeyError(key, absl::StrCat("is ", v.dump(), ", expected an integer in 1..", kMaxSide));
  }
  return static_cast<int>(v.get<int64_t>());
}

absl::Status ReadTriple(const json& j, const char* key, std::array<float, 3>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number()) {
    out->fill(static_cast<float>(it->get<double>()));
    return absl::OkStatus();
  }
  if (!it->is_array() || it->size() != 3) {
    return KeyError(key, absl::StrCat("is ", it->dump(), ", expected a number or 3 numbers"));
  }
  for (int c = 0; c < 3; ++c) {
    if (!(*it)[c].is_number()) return KeyError(key, "must hold numbers");
    (*out)[c] = static_cast<float>((*it)[c].get<double>());
  }
  return absl::OkStatus();
}

int FloorDiv2(int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

}  // namespace

absl::Status PreprocessConfig::Validate() const {
  if (do_resize) {
    if (shortest_edge < 0 || (shortest_edge == 0 && (size_height <= 0 || size_width <= 0))) {
      return absl::InvalidArgumentError(
          "preprocessing: resize needs a positive size {height, width} or shortest_edge");
    }
    if (shortest_edge > 0 && !do_center_crop) {
      return absl::InvalidArgumentError(
          "preprocessing: a shortest_edge resize without a center crop gives a size that varies "
          "per image; the vision tower needs a fixed size, so set do_center_crop");
    }
  }
  if (!do_resize && !do_center_crop) {
    return absl::InvalidArgumentError(
        "preprocessing: neither do_resize nor do_center_crop is set; the vision tower needs a "
        "fixed input size");
  }
  if (do_center_crop && (crop_height <= 0 || crop_width <= 0)) {
    return absl::InvalidArgumentError("preprocessing: center crop needs a positive crop_size");
  }
  if (resample != Resample::kBilinear && resample != Resample::kBicubic) {
    return absl::InvalidArgumentError(
        "preprocessing: resample must be 2 (bilinear) or 3 (bicubic)");
  }
  if (do_rescale && !(std::isfinite(rescale_factor) && rescale_factor > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocessing: rescale_factor is ", rescale_factor, ", expected > 0"));
  }
  if (do_normalize) {
    for (int c = 0; c < 3; ++c) {
      if (!std::isfinite(image_mean[c]) || !std::isfinite(image_std[c]) || image_std[c] == 0) {
        return absl::InvalidArgumentError(
            "preprocessing: image_mean must be finite and image_std finite and non-zero");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PreprocessConfig> ParsePreprocessorConfig(std::string_view json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("preprocessor_config.json is not a JSON object");
  }
  std::string type;
  for (const char* key : {"image_processor_type", "feature_extractor_type"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  const bool clip = absl::StartsWith(type, "CLIP");
  if (!clip && type != "SiglipImageProcessor") {
    return KeyError(
        "image_processor_type",
        absl::StrCat("is \"", type, "\", expected SiglipImageProcessor or CLIPImageProcessor"));
  }
  // Class defaults (transformers 4.44 __init__ signatures).
  PreprocessConfig cfg;
  cfg.resample = Resample::kBicubic;
  if (clip) {
    cfg.do_convert_rgb = true;
    cfg.shortest_edge = 224;
    cfg.do_center_crop = true;
    cfg.crop_height = cfg.crop_width = 224;
    cfg.image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
    cfg.image_std = {0.26862954f, 0.26130258f, 0.27577711f};
  } else {
    cfg.do_convert_rgb = false;  // null in the class; decoding yields RGB either way
    cfg.size_height = cfg.size_width = 224;
    cfg.image_mean = cfg.image_std = {0.5f, 0.5f, 0.5f};
  }
  MODRWKV_RETURN_IF_ERROR(ReadBool(j, "do_convert_rgb", &cfg.do_convert_rgb));
  MODRWKV_RETURN_IF_ERROR(ReadBool(j, "do_resize", &cfg.do_resize));
  MODRWKV_RETURN_IF_ERROR(ReadBool(j, "do_rescale", &cfg.do_rescale));
  MODRWKV_RETURN_IF_ERROR(ReadBool(j, "do_normalize", &cfg.do_normalize));
  if (auto it = j.find("size"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      MODRWKV_ASSIGN_OR_RETURN(int side, ReadSide(*it, "size"));
      if (clip) {
        cfg.shortest_edge = side;
      } else {
        cfg.size_height = cfg.size_width = side;
      }
    } else if (it->is_object() && it->contains("shortest_edge")) {
      MODRWKV_ASSIGN_OR_RETURN(cfg.shortest_edge,
                               ReadSide((*it)["shortest_edge"], "size.shortest_edge"));
    } else if (it->is_object() && it->contains("height") && it->contains("width")) {
      MODRWKV_ASSIGN_OR_RETURN(cfg.size_height, ReadSide((*it)["height"], "size.height"));
      MODRWKV_ASSIGN_OR_RETURN(cfg.size_width, ReadSide((*it)["width"], "size.width"));
      cfg.shortest_edge = 0;
    } else {
      return KeyError("size", absl::StrCat("is ", it->dump(),
                                           ", expected an integer, {\"height\", \"width\"} or "
                                           "{\"shortest_edge\"}"));
    }
  }
  if (auto it = j.find("resample"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || (it->get<int>() != 2 && it->get<int>() != 3)) {
      return KeyError("resample",
                      absl::StrCat("is ", it->dump(), ", expected 2 (bilinear) or 3 (bicubic)"));
    }
    cfg.resample = static_cast<Resample>(it->get<int>());
  }
  if (clip) {  // SigLIP ignores the crop keys
    MODRWKV_RETURN_IF_ERROR(ReadBool(j, "do_center_crop", &cfg.do_center_crop));
    if (auto it = j.find("crop_size"); it != j.end() && !it->is_null()) {
      if (it->is_number_integer()) {
        MODRWKV_ASSIGN_OR_RETURN(cfg.crop_height, ReadSide(*it, "crop_size"));
        cfg.crop_width = cfg.crop_height;
      } else if (it->is_object() && it->contains("height") && it->contains("width")) {
        MODRWKV_ASSIGN_OR_RETURN(cfg.crop_height, ReadSide((*it)["height"], "crop_size.height"));
        MODRWKV_ASSIGN_OR_RETURN(cfg.crop_width, ReadSide((*it)["width"], "crop_size.width"));
      } else {
        return KeyError(
            "crop_size",
            absl::StrCat("is ", it->dump(), ", expected an integer or {\"height\", \"width\"}"));
      }
    }
  }
  if (auto it = j.find("rescale_factor"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) return KeyError("rescale_factor", "must be a number");
    cfg.rescale_factor = it->get<double>();
  }
  MODRWKV_RETURN_IF_ERROR(ReadTriple(j, "image_mean", &cfg.image_mean));
  MODRWKV_RETURN_IF_ERROR(ReadTriple(j, "image_std", &cfg.image_std));
  MODRWKV_RETURN_IF_ERROR(cfg.Validate());
  return cfg;
}

absl::StatusOr<PreprocessConfig> LoadPreprocessorConfig(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << file.rdbuf();
  auto cfg = ParsePreprocessorConfig(text.str());
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", cfg.status().message()));
  }
  return cfg;
}

RgbImage ResizeAndCrop(const RgbImage& in, const PreprocessConfig& cfg) {
  RgbImage img;
  const RgbImage* cur = &in;
  if (cfg.do_resize) {
    int height = cfg.size_height;
    int width = cfg.size_width;
    if (cfg.shortest_edge > 0) {
      // get_resize_output_image_size(default_to_square=False): int(edge * long / short).
      const bool portrait = in.width <= in.height;
      const int short_side = portrait ? in.width : in.height;
      const int long_side = portrait ? in.height : in.width;
      const int new_long = static_cast<int>(static_cast<double>(cfg.shortest_edge) * long_side /
                                            static_cast<double>(short_side));
      height = portrait ? new_long : cfg.shortest_edge;
      width = portrait ? cfg.shortest_edge : new_long;
    }
    if (width != in.width || height != in.height) {
      img = PilResize(in, width, height, cfg.resample);
      cur = &img;
    }
  }
  if (!cfg.do_center_crop) return cur == &in ? in : img;
  // center_crop: top = (h - crop_h) // 2 (floored); rows and columns outside are zero padding.
  RgbImage out;
  out.width = cfg.crop_width;
  out.height = cfg.crop_height;
  out.rgb.assign(static_cast<size_t>(out.width) * out.height * 3, 0);
  const int top = FloorDiv2(cur->height - out.height);
  const int left = FloorDiv2(cur->width - out.width);
  const int x_begin = std::max(0, -left);
  const int x_end = std::min(out.width, cur->width - left);
  for (int y = 0; y < out.height; ++y) {
    const int sy = y + top;
    if (sy < 0 || sy >= cur->height || x_end <= x_begin) continue;
    std::memcpy(out.rgb.data() + (static_cast<size_t>(y) * out.width + x_begin) * 3,
                cur->rgb.data() + (static_cast<size_t>(sy) * cur->width + left + x_begin) * 3,
                static_cast<size_t>(x_end - x_begin) * 3);
  }
  return out;
}

void Preprocess(const RgbImage& in, const PreprocessConfig& cfg, float* out) {
  const RgbImage img = ResizeAndCrop(in, cfg);
  // uint8 * factor is computed in double and stored as float32 (numpy promotes, then astype);
  // normalisation runs in float32. 256 values per channel: a table is exact and fast.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      float f = cfg.do_rescale ? static_cast<float>(v * cfg.rescale_factor) : static_cast<float>(v);
      if (cfg.do_normalize) f = (f - cfg.image_mean[c]) / cfg.image_std[c];
      lut[c][v] = f;
    }
  }
  const size_t plane = static_cast<size_t>(img.width) * img.height;
  const uint8_t* src = img.rgb.data();
  for (size_t i = 0; i < plane; ++i, src += 3) {
    out[i] = lut[0][src[0]];
    out[plane + i] = lut[1][src[1]];
    out[2 * plane + i] = lut[2][src[2]];
  }
}

}  // namespace modrwkv::encoders
