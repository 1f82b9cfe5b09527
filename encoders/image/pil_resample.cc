// Pillow's fixed-point convolution resampler. Facts carried over from Pillow 9.4 Resample.c:
// filter support 1 (bilinear) / 2 (bicubic, a = -0.5) scaled by the downscale factor (antialias),
// centre = (i + 0.5) * scale, window [int(centre - support + 0.5), int(centre + support + 0.5)),
// weights normalised to sum 1 in double, then rounded half away from zero to 22-bit fixed point;
// sums start at 1 << 21 and are shifted right by 22 and clipped to 0..255. Horizontal pass first
// (over only the rows the vertical pass reads), then vertical; a pass whose size is unchanged is
// skipped.
#include "encoders/image/pil_resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace modrwkv::encoders {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double BilinearFilter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output index: the first input index, the tap count, and `stride` fixed-point weights.
struct Coefficients {
  int stride = 0;
  std::vector<int> first;  // [out]
  std::vector<int> count;  // [out]
  std::vector<int32_t> k;  // [out][stride]
};

Coefficients Precompute(int in_size, int out_size, Resample filter) {
  const bool bicubic = filter == Resample::kBicubic;
  const double base_support = bicubic ? 2.0 : 1.0;
  // Pillow computes the box width in float (in1 - in0), exact for any int image size.
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = base_support * filterscale;
  Coefficients c;
  c.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.stride, 0);
  std::vector<double> w(c.stride);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    xmax = std::min(xmax, c.stride);
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double arg = (x + xmin - center + 0.5) * ss;
      w[x] = bicubic ? BicubicFilter(arg) : BilinearFilter(arg);
      ww += w[x];
    }
    int32_t* k = &c.k[static_cast<size_t>(xx) * c.stride];
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = std::max(xmax, 0);
  }
  return c;
}

inline uint8_t Clip8(int32_t v) {
  return static_cast<uint8_t>(std::clamp(v >> kPrecisionBits, 0, 255));
}

// Rows [y0, y0 + rows) of `in` resampled horizontally into `out` ([rows][out_w][3]).
void Horizontal(const RgbImage& in, int y0, int rows, const Coefficients& c, int out_w,
                uint8_t* out) {
  const int32_t half = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in.rgb.data() + static_cast<size_t>(y0 + y) * in.width * 3;
    uint8_t* dst = out + static_cast<size_t>(y) * out_w * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.stride];
      const uint8_t* p = src + c.first[xx] * 3;
      int32_t s0 = half, s1 = half, s2 = half;
      for (int x = 0, n = c.count[xx]; x < n; ++x, p += 3) {
        s0 += p[0] * k[x];
        s1 += p[1] * k[x];
        s2 += p[2] * k[x];
      }
      dst[xx * 3 + 0] = Clip8(s0);
      dst[xx * 3 + 1] = Clip8(s1);
      dst[xx * 3 + 2] = Clip8(s2);
    }
  }
}

// Vertical pass over rows of `width * 3` samples: all samples of a row share one weight, so the
// inner loop runs along the row (contiguous, vectorisable); integer sums make the order free.
void Vertical(const uint8_t* in, int width, int row_offset, const Coefficients& c, int out_h,
              uint8_t* out) {
  const int n = width * 3;
  std::vector<int32_t> acc(n);
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.stride];
    for (int y = 0, taps = c.count[yy]; y < taps; ++y) {
      const uint8_t* row = in + static_cast<size_t>(c.first[yy] - row_offset + y) * n;
      const int32_t w = k[y];
      for (int i = 0; i < n; ++i) acc[i] += row[i] * w;
    }
    uint8_t* dst = out + static_cast<size_t>(yy) * n;
    for (int i = 0; i < n; ++i) dst[i] = Clip8(acc[i]);
  }
}

}  // namespace

RgbImage PilResize(const RgbImage& in, int out_width, int out_height, Resample filter) {
  if (out_width == in.width && out_height == in.height) return in;
  const bool need_horizontal = out_width != in.width;
  const bool need_vertical = out_height != in.height;
  const Coefficients horiz = Precompute(in.width, out_width, filter);
  const Coefficients vert = Precompute(in.height, out_height, filter);
  // Rows the vertical pass reads (all of them when it is skipped).
  const int ybox_first = vert.first[0];
  const int ybox_last = vert.first[out_height - 1] + vert.count[out_height - 1];

  RgbImage out;
  out.width = out_width;
  out.height = out_height;
  out.rgb.resize(static_cast<size_t>(out_width) * out_height * 3);
  if (!need_vertical) {
    // ybox covers every row when the height is unchanged.
    Horizontal(in, 0, in.height, horiz, out_width, out.rgb.data());
    return out;
  }
  if (!need_horizontal) {
    Vertical(in.rgb.data(), in.width, 0, vert, out_height, out.rgb.data());
    return out;
  }
  std::vector<uint8_t> temp(static_cast<size_t>(ybox_last - ybox_first) * out_width * 3);
  Horizontal(in, ybox_first, ybox_last - ybox_first, horiz, out_width, temp.data());
  Vertical(temp.data(), out_width, ybox_first, vert, out_height, out.rgb.data());
  return out;
}

}  // namespace modrwkv::encoders
