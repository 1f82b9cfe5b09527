// libFuzzer harness for client image bytes: probe, decode with tight limits, and preprocess to a
// small size with both resamplers and a center crop. Seeds: tests/fuzz/seeds/image_decode_fuzz
// (make_seeds.py) and the corpus of tests/golden/image. The image sources are compiled into this
// target so that they carry the fuzzer's instrumentation; libvips itself is not instrumented.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "encoders/image/image_decode.cc"
#include "encoders/image/pil_resample.cc"
#include "encoders/image/preprocess.cc"

namespace {

using modrwkv::encoders::DecodeOptions;
using modrwkv::encoders::PreprocessConfig;
using modrwkv::encoders::Resample;

PreprocessConfig SmallConfig(bool clip) {
  PreprocessConfig cfg;
  cfg.size_height = 24;
  cfg.size_width = 32;
  if (clip) {
    cfg.shortest_edge = 20;
    cfg.do_center_crop = true;
    cfg.crop_height = cfg.crop_width = 20;
    cfg.resample = Resample::kBicubic;
  }
  return cfg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  DecodeOptions options;
  options.limits.max_bytes = 1 << 20;
  options.limits.max_pixels = 1 << 20;  // 1 Mpx keeps each run fast
  const absl::Span<const uint8_t> in(data, size);
  auto header = modrwkv::encoders::ProbeImage(in, options, "fuzz");
  options.apply_exif_orientation = size % 2 == 0;
  auto rgb = modrwkv::encoders::DecodeImage(in, options, "fuzz");
  if (rgb.ok() != header.ok()) {
    // Decoding may fail after a good header (truncation), never succeed after a failed probe.
    if (rgb.ok()) std::abort();
  }
  if (!rgb.ok()) return 0;
  if (rgb->rgb.size() != static_cast<size_t>(rgb->width) * rgb->height * 3) std::abort();
  for (bool clip : {false, true}) {
    const PreprocessConfig cfg = SmallConfig(clip);
    if (!cfg.Validate().ok()) std::abort();
    std::vector<float> out(3 * cfg.out_height() * cfg.out_width());
    modrwkv::encoders::Preprocess(*rgb, cfg, out.data());
    for (float v : out) {
      if (!(v >= -1.0001f && v <= 2.2f)) std::abort();  // (x/255 - mean) / std stays bounded
    }
  }
  return 0;
}
