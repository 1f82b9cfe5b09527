// Pillow's separable resampler (src/libImaging/Resample.c, Image.resize with reducing_gap=None) on
// 8-bit RGB, reimplemented so that our output equals transformers' PIL-based resize byte for byte.
#pragma once

#include "encoders/image/image_decode.h"
#include "encoders/image/preprocess.h"

namespace modrwkv::encoders {

// Resizes `in` ([h][w][3]) to [out_height][out_width][3]. Sizes must be positive. Same size is a
// copy, as in Pillow.
RgbImage PilResize(const RgbImage& in, int out_width, int out_height, Resample filter);

}  // namespace modrwkv::encoders
