// The per-element arithmetic of the RWKV7 ops, as __host__ __device__ functions: the CUDA kernels
// (rwkv7_ops.cu) call them on the device, and the CPU build compiles the same header as plain C++
// (tests/engine/cuda/rwkv7_math_test.cc checks it against the CPU backend's kernels), so the
// formulas are tested on every machine, GPU or not.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define MODRWKV_HD __host__ __device__ __forceinline__
#else
#define MODRWKV_HD inline
#endif

namespace modrwkv::cuda::math {

constexpr float kLnEps = 1e-5f;            // LayerNorm (ln0, ln1, ln2, ln_out)
constexpr float kGroupNormEps = 64e-5f;    // the per-head GroupNorm after the recurrence
constexpr float kNormEps = 1e-12f;         // the L2 normalisation of kk
constexpr float kDecayScale = -0.606531f;  // -exp(-0.5)

MODRWKV_HD float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Token shift: the row mixed with its predecessor (the previous row of the sequence, or the
// shift state in the slot) by a learned per-channel amount.
MODRWKV_HD float TokenShift(float x, float prev, float mix) { return x + (prev - x) * mix; }

// The decay in (0.545, 1): exp(-e^-0.5 * sigmoid(w0 + lora)).
MODRWKV_HD float Decay(float w_pre) { return expf(kDecayScale * Sigmoid(w_pre)); }

// The key after the in-context learning rate: k * (1 + (a - 1) * k_a).
MODRWKV_HD float KeyWithIclr(float k, float a, float k_a) { return k * (1.0f + (a - 1.0f) * k_a); }

// Layers after the first mix the value with the first layer's: v + (v_first - v) * gate.
MODRWKV_HD float ValueResidual(float v, float v_first, float gate_pre) {
  return v + (v_first - v) * Sigmoid(gate_pre);
}

// The output of one head after its GroupNorm: (norm + bonus * v) * g.
MODRWKV_HD float GatedOutput(float normed, float bonus, float v, float g) {
  return (normed + bonus * v) * g;
}

MODRWKV_HD float ReluSquare(float x) {
  const float r = x > 0.0f ? x : 0.0f;
  return r * r;
}

// 1 / max(sqrt(sum of squares), eps): the scale of an L2 normalisation.
MODRWKV_HD float InvL2(float sum_squares) { return 1.0f / fmaxf(sqrtf(sum_squares), kNormEps); }

// 1 / sqrt(var + eps): the scale of a LayerNorm.
MODRWKV_HD float InvStd(float var, float eps) { return 1.0f / sqrtf(var + eps); }

}  // namespace modrwkv::cuda::math
