// Image decoding with libvips: header probe and limits, then a strip-wise conversion of the first
// frame to 8-bit RGB following PIL's convert('RGB') (see image_decode.h for the rules).
#include "encoders/image/image_decode.h"

#include <vips/vips.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
namespace {

// Formats accepted, as named by their loader classes ("VipsForeignLoad" + name).
constexpr absl::string_view kFormats[] = {"jpeg", "png", "webp", "gif", "tiff", "heif"};

// Loader classes reachable from client bytes; all other loaders stay blocked.
constexpr const char* kAllowedLoaders[] = {
    "VipsForeignLoadJpeg",  "VipsForeignLoadPng",  "VipsForeignLoadWebp",
    "VipsForeignLoadNsgif", "VipsForeignLoadTiff", "VipsForeignLoadHeif",
};

struct GObjectUnref {
  void operator()(void* p) const { g_object_unref(p); }
};
using ImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;
using RegionPtr = std::unique_ptr<VipsRegion, GObjectUnref>;

// libvips keeps one process-wide error buffer; take (and clear) it so that the next failure on any
// thread does not report this one's text. Concurrent failures may still interleave their text.
std::string TakeVipsError() {
  char* text = vips_error_buffer_copy();
  std::string out = text != nullptr ? text : "";
  g_free(text);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  absl::StrReplaceAll({{"\n", "; "}}, &out);
  return out.empty() ? "unknown libvips error" : out;
}

absl::Status DecodeError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what, ": ", TakeVipsError()));
}

// Opens the header lazily (no pixels are decoded until a region is prepared) and checks limits.
absl::StatusOr<ImagePtr> OpenImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options,
                                   absl::string_view field, ImageHeader* header) {
  MODRWKV_RETURN_IF_ERROR(InitVips());
  MODRWKV_RETURN_IF_ERROR(options.limits.Validate());
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": image is empty (0 bytes)"));
  }
  if (static_cast<int64_t>(bytes.size()) > options.limits.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: image is %d bytes, more than the limit of %d (max-image-bytes)", field,
                        bytes.size(), options.limits.max_bytes));
  }
  const char* loader = vips_foreign_find_load_buffer(bytes.data(), bytes.size());
  if (loader == nullptr) {
    TakeVipsError();
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": not a supported image (expected JPEG, PNG, WebP, GIF, TIFF or HEIF/AVIF)"));
  }
  // `loader` is a class name such as "VipsForeignLoadJpegBuffer".
  std::string name = absl::AsciiStrToLower(
      absl::StripSuffix(absl::StripPrefix(loader, "VipsForeignLoad"), "Buffer"));
  if (name == "nsgif") name = "gif";
  if (std::find(std::begin(kFormats), std::end(kFormats), name) == std::end(kFormats)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a supported image: the data looks like ", name,
                     ", expected JPEG, PNG, WebP, GIF, TIFF or HEIF/AVIF"));
  }
  // The buffer is not copied: the image must not outlive `bytes` (it does not leave this file).
  // Sequential access streams the file; truncation fails the read instead of leaving grey rows.
  VipsImage* raw =
      vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                 "fail_on", VIPS_FAIL_ON_TRUNCATED, nullptr);
  if (raw == nullptr) return DecodeError(field, absl::StrCat("cannot read the ", name, " header"));
  ImagePtr image(raw);
  const int64_t width = vips_image_get_width(raw);
  const int64_t height = vips_image_get_height(raw);
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: image has size %dx%d, expected a positive size", field, width, height));
  }
  if (width * height > options.limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: image is %dx%d = %d pixels, more than the limit of %d (max-image-pixels)", field,
        width, height, width * height, options.limits.max_pixels));
  }
  header->width = static_cast<int>(width);
  header->height = static_cast<int>(height);
  header->bands = vips_image_get_bands(raw);
  header->format = name;
  header->exif_orientation = std::clamp(vips_image_get_orientation(raw), 1, 8);
  return image;
}

// The 8-bit value PIL gives a sample of the native format (see image_decode.h).
template <typename T>
inline uint8_t To8(T v, bool single_grey) {
  if constexpr (sizeof(T) == 1) {
    return v;
  } else {
    return single_grey ? static_cast<uint8_t>(std::min<unsigned>(v, 255))
                       : static_cast<uint8_t>(v >> 8);
  }
}

inline uint8_t MulDiv255(int a, int b) {  // PIL's MULDIV255
  const int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

// Converts one row of `width` pixels with `bands` samples of type T to RGB.
template <typename T>
void ConvertRow(const T* in, int width, int bands, bool cmyk, uint8_t* out) {
  const bool single_grey = bands == 1;
  for (int x = 0; x < width; ++x, in += bands, out += 3) {
    if (bands < 3) {
      out[0] = out[1] = out[2] = To8(in[0], single_grey);
    } else if (cmyk && bands >= 4) {
      const int nk = 255 - To8(in[3], false);
      for (int c = 0; c < 3; ++c) {
        out[c] = static_cast<uint8_t>(std::clamp(nk - MulDiv255(To8(in[c], false), nk), 0, 255));
      }
    } else {
      out[0] = To8(in[0], false);
      out[1] = To8(in[1], false);
      out[2] = To8(in[2], false);
    }
  }
}

}  // namespace

absl::Status ImageLimits::Validate() const {
  if (max_bytes <= 0 || max_pixels <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image limits must be positive, got max-image-bytes %d and max-image-pixels %d", max_bytes,
        max_pixels));
  }
  return absl::OkStatus();
}

absl::Status InitVips() {
  static const absl::Status* const status = [] {
    if (VIPS_INIT("modrwkv") != 0) {
      return new absl::Status(
          absl::InternalError(absl::StrCat("libvips failed to start: ", TakeVipsError())));
    }
    // libvips reports failures through the error buffer (which we turn into a Status); its
    // g_warning()s on stderr for every bad tile of a bad client file are noise in a server log.
    g_log_set_handler(
        "VIPS", G_LOG_LEVEL_WARNING, [](const gchar*, GLogLevelFlags, const gchar*, gpointer) {},
        nullptr);
    vips_concurrency_set(1);
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (const char* name : kAllowedLoaders) vips_operation_block_set(name, FALSE);
    return new absl::Status();
  }();
  return *status;
}

absl::StatusOr<ImageHeader> ProbeImage(absl::Span<const uint8_t> bytes,
                                       const DecodeOptions& options, absl::string_view field) {
  ImageHeader header;
  MODRWKV_ASSIGN_OR_RETURN(ImagePtr image, OpenImage(bytes, options, field, &header));
  return header;
}

absl::StatusOr<RgbImage> DecodeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options,
                                     absl::string_view field) {
  ImageHeader header;
  MODRWKV_ASSIGN_OR_RETURN(ImagePtr image, OpenImage(bytes, options, field, &header));
  const VipsBandFormat format = vips_image_get_format(image.get());
  const bool cmyk = vips_image_get_interpretation(image.get()) == VIPS_INTERPRETATION_CMYK;
  if (format != VIPS_FORMAT_UCHAR && format != VIPS_FORMAT_USHORT) {
    // Float, signed or 32-bit samples (TIFF): clip to 0..255.
    VipsImage* cast = nullptr;
    if (vips_cast_uchar(image.get(), &cast, nullptr) != 0) {
      return DecodeError(field, "cannot convert the samples to 8 bits");
    }
    image.reset(cast);
  }
  VipsImage* in = image.get();
  const int bands = vips_image_get_bands(in);
  const bool wide = vips_image_get_format(in) == VIPS_FORMAT_USHORT;

  RgbImage out;
  out.width = header.width;
  out.height = header.height;
  out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
  RegionPtr region(vips_region_new(in));
  constexpr int kStrip = 64;  // rows decoded per step; sequential access reads top to bottom
  for (int y0 = 0; y0 < out.height; y0 += kStrip) {
    VipsRect rect{0, y0, out.width, std::min(kStrip, out.height - y0)};
    if (vips_region_prepare(region.get(), &rect) != 0) {
      return DecodeError(field, absl::StrCat("cannot decode the ", header.format, " image"));
    }
    for (int y = y0; y < y0 + rect.height; ++y) {
      uint8_t* dst = out.rgb.data() + static_cast<size_t>(y) * out.width * 3;
      const VipsPel* src = VIPS_REGION_ADDR(region.get(), 0, y);
      if (wide) {
        ConvertRow(reinterpret_cast<const uint16_t*>(src), out.width, bands, cmyk, dst);
      } else {
        ConvertRow(reinterpret_cast<const uint8_t*>(src), out.width, bands, cmyk, dst);
      }
    }
  }
  if (options.apply_exif_orientation && header.exif_orientation != 1) {
    return ApplyOrientation(out, header.exif_orientation);
  }
  return out;
}

RgbImage ApplyOrientation(const RgbImage& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int w = in.width;
  const int h = in.height;
  const bool swap = orientation >= 5;  // 5..8 transpose the axes
  RgbImage out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.rgb.resize(in.rgb.size());
  for (int oy = 0; oy < out.height; ++oy) {
    uint8_t* dst = out.rgb.data() + static_cast<size_t>(oy) * out.width * 3;
    for (int ox = 0; ox < out.width; ++ox, dst += 3) {
      int sx = ox;
      int sy = oy;
      switch (orientation) {
        case 2:
          sx = w - 1 - ox;
          break;  // mirror
        case 3:
          sx = w - 1 - ox;
          sy = h - 1 - oy;
          break;  // rotate 180
        case 4:
          sy = h - 1 - oy;
          break;  // flip
        case 5:
          sx = oy;
          sy = ox;
          break;  // transpose
        case 6:
          sx = oy;
          sy = h - 1 - ox;
          break;  // rotate 90 clockwise
        case 7:
          sx = w - 1 - oy;
          sy = h - 1 - ox;
          break;  // transverse
        case 8:
          sx = w - 1 - oy;
          sy = ox;
          break;  // rotate 90 anticlockwise
      }
      std::memcpy(dst, in.rgb.data() + (static_cast<size_t>(sy) * w + sx) * 3, 3);
    }
  }
  return out;
}

}  // namespace modrwkv::encoders
