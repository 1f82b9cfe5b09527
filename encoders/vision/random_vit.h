// Seeded random ViT weights and pixels, bit-identical to tools/golden/gen_vision_fixtures.py
// (generator: docs/random-weights.md; ranges: docs/vision.md). Used by the golden tests of
// towers too large to commit, and by the benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "encoders/vision/vit_config.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_weights.h"  // RandomUniform, the generator

namespace modrwkv::encoders {

// Every tensor of the vision tower, bare SiglipVisionTransformer / CLIPVisionTransformer names
// (no "vision_model." prefix, no pooling head), f32.
std::vector<OwnedTensor> MakeRandomVitWeights(const VitConfig& config, uint64_t seed);

// [batch][num_channels][image_size][image_size] in (-1, 1): tensor name "pixels".
std::vector<float> RandomPixels(const VitConfig& config, int batch, uint64_t seed);

}  // namespace modrwkv::encoders
