// The SigLIP / CLIP image preprocessors of transformers (4.44) in C++: PIL-exact resampling on
// uint8, center crop, rescale and normalise, to the channel-planar float tensor a ViT consumes.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "encoders/image/image_decode.h"

namespace modrwkv::encoders {

// PIL's resampling filter numbers, as preprocessor_config.json spells them.
enum class Resample : int { kBilinear = 2, kBicubic = 3 };

// What SiglipImageProcessor and CLIPImageProcessor read from preprocessor_config.json. Defaults are
// SigLIP's (google/siglip2-base-patch16-384 as configured by its folder).
struct PreprocessConfig {
  bool do_convert_rgb = true;  // decoding always yields RGB; kept to reflect the file
  bool do_resize = true;
  // Exactly one of: a fixed size (SigLIP: straight resize, aspect not kept), or a shortest edge
  // (CLIP: the short side becomes this, the long side int(edge * long / short)).
  int size_height = 384;
  int size_width = 384;
  int shortest_edge = 0;  // > 0 selects the CLIP rule; size_height/width are then unused
  Resample resample = Resample::kBilinear;
  bool do_center_crop = false;
  int crop_height = 0;
  int crop_width = 0;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<float, 3> image_mean = {0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std = {0.5f, 0.5f, 0.5f};

  // The towers served need a fixed input size: a shortest-edge resize needs a center crop.
  absl::Status Validate() const;
  int out_height() const { return do_center_crop ? crop_height : size_height; }
  int out_width() const { return do_center_crop ? crop_width : size_width; }
};

// Parses preprocessor_config.json. An integer "size" means a shortest edge for CLIP processors
// ("image_processor_type" or "feature_extractor_type" naming CLIP) and a square otherwise;
// an integer "crop_size" is a square. Missing keys take the defaults of the processor class.
absl::StatusOr<PreprocessConfig> ParsePreprocessorConfig(std::string_view json_text);
absl::StatusOr<PreprocessConfig> LoadPreprocessorConfig(const std::string& path);

// The resize and center-crop stages alone: the uint8 image the processor rescales, [H][W][3].
// Exposed for the golden tests, which compare at this stage without float rounding.
RgbImage ResizeAndCrop(const RgbImage& in, const PreprocessConfig& cfg);

// Writes out[3][out_height()][out_width()] float32 (channel-planar). `cfg` must be valid and
// `in` non-empty.
void Preprocess(const RgbImage& in, const PreprocessConfig& cfg, float* out);

}  // namespace modrwkv::encoders
