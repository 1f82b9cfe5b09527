// The element-wise kernels of the encoders on the GPU (CudaLayerStack, CudaWavlmLayers,
// CudaWavlmStem, CudaTimer), besides the LayerNorm it shares with the RWKV7 backend
// (engine/cuda/rwkv7_ops.cuh) and the products (cuBLAS). CUDA twins of
// encoders/vision/transformer_ops.cc's AddBias, ActivationRows and ScaledSoftmax, and of WavLM's
// gate, biased softmax, convolution windows and channel norm (encoders/speech/wavlm_encoder.cc)
// and of the Timer's rotary embedding and gated activation (encoders/timeseries/timer.cc).
// Device pointers, row-major fp32; each launcher enqueues on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace modrwkv::encoders::cuda {

// transformer_ops.h's Activation, plus none and ReLU (the adapters').
enum class BiasActivation { kNone, kGeluErf, kGeluTanh, kQuickGelu, kRelu };

// y[r][i] = act(y[r][i] + bias[i]) over rows x n (no bias when bias is null).
absl::Status LaunchBiasActivation(cudaStream_t stream, float* y, int64_t rows, int n,
                                  const float* bias, BiasActivation act);

// y[i] += v[i % period] for i < n: a residual (period n) or rows of a table added to every
// clip's rows (period = the table's size).
absl::Status LaunchAddPeriodic(cudaStream_t stream, float* y, int64_t n, const float* v,
                               int64_t period);

// The input windows of a 1-D convolution: x holds in_frames rows of `channels` channels, row i's
// channel c at x[i * ld + c * channel_stride] (time-major: channel_stride 1, a pointer offset
// selecting a group's channels; channel-major: ld 1, channel_stride the frame count). Output t
// reads input rows t * stride + k - pad for taps k < kernel, rows outside [0, in_frames) being
// zeros. groups > 1: a grouped convolution (PyTorch's groups), `channels` per group, group g's
// channels following group g - 1's (x + g * channels * channel_stride).
struct ConvWindows {
  int in_frames = 0, out_frames = 0;
  int kernel = 1, stride = 1, pad = 0;
  int64_t ld = 0;
  int channels = 0;
  int64_t channel_stride = 1;
  int groups = 1;
};

// cols[g][r][k * channels + c] = output row t0 + r's window (tap k, channel c of group g),
// r < rows: the convolution becomes one product per group (a batched product) with weights in
// (tap, channel) order.
absl::Status LaunchIm2Col(cudaStream_t stream, const float* x, const ConvWindows& w, int t0,
                          int rows, float* cols);

// A vision tower's patches as rows: cols[(b * g + gy) * g + gx][(k * p + ky) * p + kx] =
// pixels[b][k][gy * p + ky][gx * p + kx] for `batch` images of `channels` x size x size, patches
// p x p, g = size / p to a side (Conv2d's (channel, ky, kx) order).
absl::Status LaunchPatchify(cudaStream_t stream, const float* pixels, int batch, int channels,
                            int size, int p, float* cols);

// x: [t][c] time-major, in place: every channel normalised over time (GroupNorm with one group
// per channel, sums in double, two passes as WavLM's CPU twin), times w[c] plus b[c], then the
// erf GELU. The first layer of WavLM's "group" feature encoder.
absl::Status LaunchChannelNormGelu(cudaStream_t stream, float* x, int t, int c, const float* w,
                                   const float* b, float eps);

// Each of `rows` rows of n scores, in place: softmax(scale * s) in fp32 with max subtraction.
// causal_period > 0: row r is query r % causal_period and keeps only its first
// r % causal_period + 1 scores (the rest become 0), as SelfAttention's causal mask.
absl::Status LaunchScaledSoftmax(cudaStream_t stream, float* s, int64_t rows, int n, float scale,
                                 int causal_period);

// WavLM's gate of the relative position bias (transformers' WavLMAttention, gru_rel_pos_linear):
// for each row r of `rows` rows of h ([rows][heads * hd], the attention input) and head h,
// with p = w h_head + b ([8]):
//   gate[(r / t * heads + h) * t + r % t] = sigmoid(p0+..+p3) * (sigmoid(p4+..+p7) * c[h] - 1) + 2
// w: [8][hd], b: [8], c: [heads].
absl::Status LaunchWavlmGate(cudaStream_t stream, const float* h, int64_t rows, int t, int heads,
                             int hd, const float* w, const float* b, const float* c, float* gate);

// One sequence's attention scores [heads][t][t] in place: row (h, i) becomes
// softmax(scale * s[j] + gate[h * t + i] * rel[h * (2t - 1) + j - i + t - 1]) over j, in fp32 with
// max subtraction (WavLM's biased attention).
absl::Status LaunchBiasedSoftmax(cudaStream_t stream, float* s, int heads, int t, float scale,
                                 const float* gate, const float* rel);

// The Timer's rotary position embedding (encoders/timeseries/timer.h), in place on q and k of
// qkv ([rows][3 * heads * hd]: q | k | v, head h at column h * hd of each; rows of sequences of
// `t` rows, row r at position r % t): with half = hd / 2, angle = float(position) * inv_freq[i],
// c, s = cos and sin of it (in double, rounded to float, as the CPU), each head's (x_i,
// x_{i+half}) becomes (x_i c - x_{i+half} s, x_{i+half} c + x_i s).
absl::Status LaunchRotary(cudaStream_t stream, float* qkv, int64_t rows, int t, int heads, int hd,
                          const float* inv_freq);

// The Timer's gated MLP activation: act[r][i] = silu(g) * u with g = gu[r][i], u = gu[r][f + i]
// ([rows][2f]: gate | up) and silu(g) = g * sigmoid(g).
absl::Status LaunchSiluGate(cudaStream_t stream, const float* gu, int64_t rows, int f, float* act);

}  // namespace modrwkv::encoders::cuda
