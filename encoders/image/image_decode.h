// Decodes client-supplied image bytes (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF) to 8-bit RGB with
// libvips, with the colour rules of the official pipeline's `PIL.Image.open(f).convert('RGB')`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace modrwkv::encoders {

// Starts libvips once per process (idempotent, thread-safe): one vips worker thread per call
// (the encoder pool owns the parallelism), no operation cache (every request decodes new bytes),
// and only the loaders of well-known formats reachable; everything else (ImageMagick, PDF, SVG,
// OpenSlide, FITS, matrix files ...) is blocked. Every function below calls it.
absl::Status InitVips();

struct ImageLimits {
  int64_t max_bytes = 20 << 20;     // encoded size (max-image-bytes)
  int64_t max_pixels = 40'000'000;  // width * height from the header (max-image-pixels)
  absl::Status Validate() const;
};

struct DecodeOptions {
  ImageLimits limits;
  // The official pipeline ignores EXIF orientation (PIL's open() does not rotate), so a phone
  // photo taken upright reaches the model on its side. We rotate by default; `false` reproduces
  // the official behaviour bit for bit.
  bool apply_exif_orientation = true;
};

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // [height][width][3]
};

struct ImageHeader {
  int width = 0;  // as stored, before any EXIF rotation
  int height = 0;
  int bands = 0;             // as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA or CMYK
  std::string format;        // loader name: "jpeg", "png", "webp", "gif", "tiff", "heif"
  int exif_orientation = 1;  // 1..8
};

// Reads only the header and checks the byte and pixel limits; no pixel is decoded, so a small
// file that declares a huge image (a decompression bomb) is refused here without allocating.
// Errors are InvalidArgument with messages that start with `field` (e.g. "input[2].image").
absl::StatusOr<ImageHeader> ProbeImage(absl::Span<const uint8_t> bytes,
                                       const DecodeOptions& options, absl::string_view field);

// Probes, then decodes the first frame / page to RGB:
//   alpha is dropped (not composited), grey is replicated, palettes are expanded;
//   16-bit samples become 8-bit as PIL does: the high byte (v >> 8), except single-band grey,
//   which PIL opens as a 32-bit integer image and clips to 0..255 (so most 16-bit grey values
//   saturate to white; odd, but it is what the model saw in training);
//   CMYK uses PIL's naive formula (no ICC); embedded ICC profiles are ignored, as PIL does;
//   other sample formats (float, 32-bit TIFF) are clipped to 0..255.
// Truncated or corrupt data is an error, never a half-decoded image.
absl::StatusOr<RgbImage> DecodeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options,
                                     absl::string_view field);

// Applies an EXIF orientation (1..8, PIL's ImageOps.exif_transpose semantics) to an RGB image.
RgbImage ApplyOrientation(const RgbImage& in, int orientation);

}  // namespace modrwkv::encoders
