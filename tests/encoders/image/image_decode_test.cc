// DecodeImage / ProbeImage against PIL's Image.open(f).convert('RGB') on the golden corpus, the
// EXIF orientation both ways, the limits, and inputs that must be refused.
#include "encoders/image/image_decode.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "tests/encoders/image/image_golden.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::Fnv1a64;
using ::modrwkv::encoders::testing::GoldenPath;
using ::modrwkv::encoders::testing::Manifest;
using ::modrwkv::encoders::testing::ReadBytes;
using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<RgbImage> Decode(const std::string& rel, bool apply_exif = true,
                                ImageLimits limits = {}) {
  const std::vector<uint8_t> bytes = ReadBytes(GoldenPath(rel));
  DecodeOptions options;
  options.limits = limits;
  options.apply_exif_orientation = apply_exif;
  return DecodeImage(bytes, options, "input[2].image");
}

TEST(ImageDecode, MatchesPilConvertRgbOnEveryCorpusImage) {
  const auto manifest = Manifest();
  int checked = 0;
  for (const auto& image : manifest["images"]) {
    const std::string file = image["file"];
    for (const auto& d : image["decoded"]) {
      SCOPED_TRACE(file + (d["apply_exif"].get<bool>() ? " (EXIF applied)" : ""));
      auto rgb = Decode(file, d["apply_exif"].get<bool>());
      ASSERT_TRUE(rgb.ok()) << rgb.status();
      ASSERT_EQ(rgb->width, d["width"].get<int>());
      ASSERT_EQ(rgb->height, d["height"].get<int>());
      if (d.contains("file")) {
        const std::vector<uint8_t> want = ReadBytes(GoldenPath(d["file"]));
        ASSERT_EQ(rgb->rgb.size(), want.size());
        // Pixels of a GIF's transparent index are a known difference (image_decode.h).
        std::vector<uint8_t> mask;
        if (image.contains("transparent_mask"))
          mask = ReadBytes(GoldenPath(image["transparent_mask"]));
        int differ = 0, max_diff = 0, masked = 0;
        for (size_t i = 0; i < want.size(); ++i) {
          const int diff = std::abs(int{rgb->rgb[i]} - int{want[i]});
          if (!mask.empty() && mask[i / 3]) {
            masked += diff != 0;
            continue;
          }
          differ += diff != 0;
          max_diff = std::max(max_diff, diff);
        }
        EXPECT_EQ(differ, 0) << "max difference " << max_diff;
        if (!mask.empty())
          std::cout << file << ": " << masked << " samples differ in transparent pixels\n";
      } else {
        EXPECT_EQ(Fnv1a64(rgb->rgb), d["fnv1a64"].get<std::string>());
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(ImageDecode, ProbeReadsTheHeader) {
  const auto bytes = ReadBytes(GoldenPath("images/exif6_320x240.jpg"));
  auto header = ProbeImage(bytes, {}, "img");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 320);
  EXPECT_EQ(header->height, 240);
  EXPECT_EQ(header->bands, 3);
  EXPECT_EQ(header->format, "jpeg");
  EXPECT_EQ(header->exif_orientation, 6);
  for (const auto& [file, format] :
       std::vector<std::pair<std::string, std::string>>{{"images/anim_160x120.gif", "gif"},
                                                        {"images/lossy_320x240.webp", "webp"},
                                                        {"images/grey_96x64.tif", "tiff"},
                                                        {"images/rgba_300x200.png", "png"}}) {
    auto h = ProbeImage(ReadBytes(GoldenPath(file)), {}, "img");
    ASSERT_TRUE(h.ok()) << file << ": " << h.status();
    EXPECT_EQ(h->format, format);
  }
}

TEST(ImageDecode, ExifOrientationBothWays) {
  auto official = Decode("images/exif6_320x240.jpg", /*apply_exif=*/false);
  auto rotated = Decode("images/exif6_320x240.jpg", /*apply_exif=*/true);
  ASSERT_TRUE(official.ok() && rotated.ok());
  EXPECT_EQ(official->width, 320);
  EXPECT_EQ(official->height, 240);
  EXPECT_EQ(rotated->width, 240);  // orientation 6: rotate 90 degrees clockwise
  EXPECT_EQ(rotated->height, 320);
  // Top-left of the rotated image is the bottom-left of the stored one.
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(rotated->rgb[c], official->rgb[(239 * 320 + 0) * 3 + c]);
  }
}

TEST(ImageDecode, ByteLimit) {
  ImageLimits limits;
  limits.max_bytes = 1000;
  auto r = Decode("images/small_160x120.jpg", true, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), StartsWith("input[2].image: image is "));
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("more than the limit of 1000 (max-image-bytes)"));
}

TEST(ImageDecode, PixelLimitFromTheHeader) {
  ImageLimits limits;
  limits.max_pixels = 160 * 120 - 1;
  auto r = Decode("images/small_160x120.jpg", true, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("160x120 = 19200 pixels, more than the limit of 19199 (max-image-pixels)"));
  limits.max_pixels = 160 * 120;
  EXPECT_TRUE(Decode("images/small_160x120.jpg", true, limits).ok());
}

TEST(ImageDecode, DecompressionBombsAreRefusedFromTheHeader) {
  // A few hundred bytes declaring 900 M / 3.6 G pixels: refused by the probe, nothing allocated
  // (an attempt to allocate 2.7 GB would show in the test's memory and time).
  for (const auto& [file, dims] : std::vector<std::pair<std::string, std::string>>{
           {"bad/bomb_30000x30000.png", "30000x30000 = 900000000 pixels"},
           {"bad/bomb_60000x60000.jpg", "60000x60000 = 3600000000 pixels"}}) {
    auto r = Decode(file);
    ASSERT_FALSE(r.ok()) << file;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), StartsWith("input[2].image: "));
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(dims + ", more than the limit of 40000000"));
  }
}

TEST(ImageDecode, TruncatedAndCorruptDataFail) {
  for (const std::string file :
       {"bad/truncated.jpg", "bad/truncated.png", "bad/corrupt_idat.png"}) {
    auto r = Decode(file);
    ASSERT_FALSE(r.ok()) << file << " decoded to " << r->width << "x" << r->height;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), StartsWith("input[2].image: ")) << file;
    std::cout << file << ": " << r.status().message() << "\n";
  }
}

TEST(ImageDecode, EmptyTextAndBlockedFormatsAreRefused) {
  auto empty = DecodeImage({}, {}, "input[0].image");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), "input[0].image: image is empty (0 bytes)");
  for (const std::string file : {"bad/not_an_image.txt", "bad/svg_blocked.svg"}) {
    auto r = Decode(file);
    ASSERT_FALSE(r.ok()) << file;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a supported image"))
        << r.status();
    std::cout << file << ": " << r.status().message() << "\n";
  }
  // A vips matrix file is text that libvips would otherwise load (its loader is not "untrusted").
  const std::string matrix = "2 2\n1 2\n3 4\n";
  auto r = DecodeImage({reinterpret_cast<const uint8_t*>(matrix.data()), matrix.size()}, {}, "m");
  EXPECT_FALSE(r.ok());
}

TEST(ImageDecode, InvalidLimitsAreRejected) {
  DecodeOptions options;
  options.limits.max_pixels = 0;
  const auto bytes = ReadBytes(GoldenPath("images/tiny_1x1.png"));
  EXPECT_EQ(DecodeImage(bytes, options, "x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImageDecode, ConcurrentDecodesAgree) {
  const auto bytes = ReadBytes(GoldenPath("images/photo_1024x768.jpg"));
  auto want = DecodeImage(bytes, {}, "x");
  ASSERT_TRUE(want.ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 3; ++i) {
        auto got = DecodeImage(bytes, {}, "x");
        if (!got.ok() || got->rgb != want->rgb) ++mismatches;
        (void)DecodeImage(ReadBytes(GoldenPath("bad/truncated.jpg")), {}, "y");
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(ApplyOrientation, AllEightAgainstPil) {
  // orient<o>_24x16.jpg are one picture stored with EXIF orientation o; PIL's exif_transpose of
  // each is in the corpus as decoded/<name>.exif.rgb (checked above); here: the transform alone.
  RgbImage in;
  in.width = 3;
  in.height = 2;
  for (int i = 0; i < 6; ++i) in.rgb.insert(in.rgb.end(), {uint8_t(i), 0, 0});
  // Stored:  0 1 2 / 3 4 5
  const std::vector<std::vector<int>> want = {{},
                                              {0, 1, 2, 3, 4, 5},
                                              {2, 1, 0, 5, 4, 3},
                                              {5, 4, 3, 2, 1, 0},
                                              {3, 4, 5, 0, 1, 2},
                                              {0, 3, 1, 4, 2, 5},
                                              {3, 0, 4, 1, 5, 2},
                                              {5, 2, 4, 1, 3, 0},
                                              {2, 5, 1, 4, 0, 3}};
  for (int o = 1; o <= 8; ++o) {
    RgbImage out = ApplyOrientation(in, o);
    EXPECT_EQ(out.width, o >= 5 ? 2 : 3) << o;
    std::vector<int> got;
    for (size_t i = 0; i < out.rgb.size(); i += 3) got.push_back(out.rgb[i]);
    EXPECT_EQ(got, want[o]) << "orientation " << o;
  }
}

}  // namespace
}  // namespace modrwkv::encoders
