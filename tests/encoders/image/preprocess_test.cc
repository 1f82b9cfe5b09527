// Resize / crop / rescale / normalise against transformers' SiglipImageProcessor and
// CLIPImageProcessor on the golden corpus, and preprocessor_config.json parsing.
#include "encoders/image/preprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include "encoders/image/pil_resample.h"
#include "tests/encoders/image/image_golden.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::GoldenPath;
using ::modrwkv::encoders::testing::Manifest;
using ::modrwkv::encoders::testing::ReadBytes;
using ::testing::HasSubstr;

PreprocessConfig Config(const std::string& name) {
  auto cfg = LoadPreprocessorConfig(GoldenPath("configs/" + name + ".json"));
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return *cfg;
}

RgbImage DecodeFile(const std::string& rel, bool apply_exif) {
  DecodeOptions options;
  options.apply_exif_orientation = apply_exif;
  auto rgb = DecodeImage(ReadBytes(GoldenPath(rel)), options, rel);
  EXPECT_TRUE(rgb.ok()) << rgb.status();
  return rgb.ok() ? *rgb : RgbImage{};
}

// Every corpus image through every stored configuration, compared at the uint8 stage (what the
// processor rescales). The bound is 1/255 on the [0,1] scale, i.e. one uint8 step.
TEST(Preprocess, ResizedImagesMatchTransformers) {
  const auto manifest = Manifest();
  std::map<std::string, PreprocessConfig> configs;
  int64_t compared = 0, differ = 0;
  int max_diff = 0, outputs = 0;
  for (const auto& image : manifest["images"]) {
    const std::string file = image["file"];
    for (const auto& o : image["outputs"]) {
      const std::string name = o["config"];
      if (!configs.count(name)) configs[name] = Config(name);
      const bool exif = o["apply_exif"];
      SCOPED_TRACE(file + " " + name + (exif ? " exif" : ""));
      const RgbImage out = ResizeAndCrop(DecodeFile(file, exif), configs[name]);
      const std::vector<uint8_t> want = ReadBytes(GoldenPath(o["file"]));
      ASSERT_EQ(out.height, o["height"].get<int>());
      ASSERT_EQ(out.width, o["width"].get<int>());
      ASSERT_EQ(out.rgb.size(), want.size());
      int image_max = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        const int d = std::abs(int{out.rgb[i]} - int{want[i]});
        differ += d != 0;
        image_max = std::max(image_max, d);
      }
      EXPECT_LE(image_max, 1);
      max_diff = std::max(max_diff, image_max);
      compared += static_cast<int64_t>(want.size());
      ++outputs;
    }
  }
  std::cout << outputs << " outputs, " << compared << " samples compared, " << differ
            << " differ, max difference " << max_diff << "/255\n";
  EXPECT_GT(outputs, 60);
}

// The whole pipeline, channel-planar float32, against the processors' pixel_values.
TEST(Preprocess, NormalisedTensorsMatchTransformers) {
  const auto manifest = Manifest();
  double max_diff = 0;
  int64_t differ = 0;
  for (const auto& n : manifest["normalised"]) {
    const PreprocessConfig cfg = Config(n["config"]);
    SCOPED_TRACE(n["file"].get<std::string>() + " " + n["config"].get<std::string>());
    const RgbImage rgb = DecodeFile(n["file"], false);
    std::vector<float> out(3 * cfg.out_height() * cfg.out_width());
    Preprocess(rgb, cfg, out.data());
    const std::vector<uint8_t> raw = ReadBytes(GoldenPath(n["expected"]));
    ASSERT_EQ(raw.size(), out.size() * 4);
    const float* want = reinterpret_cast<const float*>(raw.data());
    const size_t plane = out.size() / 3;
    for (size_t i = 0; i < out.size(); ++i) {
      // Back on the [0,1] scale: the bound is one uint8 step.
      const double d = std::abs(out[i] - want[i]) * cfg.image_std[i / plane];
      differ += out[i] != want[i];
      max_diff = std::max(max_diff, d);
      ASSERT_LE(d, 1.0 / 255 + 1e-6) << "at " << i;
    }
  }
  std::cout << differ << " floats differ, max difference " << max_diff << " on the [0,1] scale\n";
}

TEST(PreprocessConfig, ParsesTheTwoPublishedFolders) {
  const PreprocessConfig siglip = Config("siglip2_384");
  EXPECT_EQ(siglip.out_height(), 384);
  EXPECT_EQ(siglip.out_width(), 384);
  EXPECT_EQ(siglip.shortest_edge, 0);
  EXPECT_EQ(siglip.resample, Resample::kBilinear);
  EXPECT_FALSE(siglip.do_center_crop);
  EXPECT_FLOAT_EQ(siglip.image_std[2], 0.5f);
  const PreprocessConfig clip = Config("clip_336");
  EXPECT_EQ(clip.shortest_edge, 336);
  EXPECT_TRUE(clip.do_center_crop);
  EXPECT_EQ(clip.out_height(), 336);
  EXPECT_EQ(clip.resample, Resample::kBicubic);
  EXPECT_FLOAT_EQ(clip.image_mean[0], 0.48145466f);
  EXPECT_DOUBLE_EQ(clip.rescale_factor, 1.0 / 255);  // the class default
}

TEST(PreprocessConfig, ErrorsNameTheKey) {
  const std::string head = R"({"image_processor_type": "SiglipImageProcessor", )";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {head + R"("resample": 1})", "\"resample\" is 1, expected 2 (bilinear) or 3 (bicubic)"},
      {head + R"("size": {"height": 0, "width": 4}})", "\"size.height\" is 0"},
      {head + R"("size": "big"})", "\"size\" is \"big\""},
      {head + R"("image_mean": [0.5, 0.5]})", "\"image_mean\" is [0.5,0.5]"},
      {head + R"("do_resize": 1})", "\"do_resize\" must be true or false"},
      {R"({"image_processor_type": "ViTImageProcessor"})", "expected SiglipImageProcessor"},
      {R"({"feature_extractor_type": "CLIPFeatureExtractor", "do_center_crop": false})",
       "set do_center_crop"},
      {"[1, 2", "not a JSON object"},
  };
  for (const auto& [text, message] : cases) {
    auto cfg = ParsePreprocessorConfig(text);
    ASSERT_FALSE(cfg.ok()) << text;
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(message)) << text;
  }
  EXPECT_EQ(LoadPreprocessorConfig("/nonexistent/preprocessor_config.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Preprocess, CenterCropPadsWithZerosWhenTheImageIsSmaller) {
  PreprocessConfig cfg;
  cfg.do_resize = false;
  cfg.do_center_crop = true;
  cfg.crop_height = 4;
  cfg.crop_width = 1;
  RgbImage in{3, 1, std::vector<uint8_t>(9, 200)};
  in.rgb[3] = 7;  // middle pixel's red
  ASSERT_TRUE(cfg.Validate().ok());
  const RgbImage out = ResizeAndCrop(in, cfg);
  // transformers: left = (3 - 1) // 2 = 1; top = (1 - 4) // 2 = -2, so image row 0 lands on row 2.
  ASSERT_EQ(out.rgb.size(), 12u);
  EXPECT_EQ(out.rgb[0], 0);
  EXPECT_EQ(out.rgb[3], 0);
  EXPECT_EQ(out.rgb[6], 7);
  EXPECT_EQ(out.rgb[9], 0);
}

TEST(PilResize, ConstantImagesStayConstant) {
  for (Resample f : {Resample::kBilinear, Resample::kBicubic}) {
    RgbImage in{37, 23, std::vector<uint8_t>(37 * 23 * 3, 173)};
    for (auto [w, h] : std::vector<std::pair<int, int>>{{5, 7}, {100, 3}, {37, 50}, {1, 1}}) {
      const RgbImage out = PilResize(in, w, h, f);
      ASSERT_EQ(out.rgb.size(), size_t(w) * h * 3);
      for (uint8_t v : out.rgb) ASSERT_EQ(v, 173);
    }
  }
}

}  // namespace
}  // namespace modrwkv::encoders
