// What cuda_model.cc (the upload) and cuda_layer.cc (a layer's forward) agree on: where each of a
// layer's small vectors sits in Layer::vec, the planes of the step's mixed inputs, and from how
// many rows a product runs on tensor cores.
#pragma once

namespace modrwkv::cuda {

// With 16-bit weights, a product over this many rows or more runs on tensor cores (cuBLAS, the
// activations rounded to 16 bits); fewer rows (decode of small batches) go through gemv_half.cuh,
// which reads each weight once and multiplies it by the f32 activations as the CPU does. At 16
// rows the CUDA-core kernel's FMAs already cost more than reading the weights.
constexpr int kTensorCoreRows = 16;

// The small vectors of a layer, each C floats, in this order in Layer::vec.
enum Vec : int {
  kLn1W,
  kLn1B,
  kLn2W,
  kLn2B,
  kMixR,  // the six time-mixing lerps, contiguous: r, w, k, v, a, g
  kMixW,
  kMixK,
  kMixV,
  kMixA,
  kMixG,
  kW0,
  kA0,
  kV0,
  kKK,
  kKA,
  kRK,
  kLnxW,
  kLnxB,
  kFfnMix,
  kNumVec
};

// The planes of Scratch::mix: the six time-mixed inputs (then, reused, the channel-mix input).
enum Plane : int { kXr, kXw, kXk, kXv, kXa, kXg };

}  // namespace modrwkv::cuda
