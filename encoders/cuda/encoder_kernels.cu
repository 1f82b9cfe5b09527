#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/cuda/launch.cuh"

namespace modrwkv::encoders::cuda {
namespace {

using modrwkv::cuda::AllowSuccessor;
using modrwkv::cuda::Launch;
using modrwkv::cuda::WaitForPredecessor;

__device__ __forceinline__ float Activate(float x, BiasActivation act) {
  switch (act) {
    case BiasActivation::kNone:
      return x;
    case BiasActivation::kGeluErf:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case BiasActivation::kGeluTanh:
      return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case BiasActivation::kQuickGelu:
      return x / (1.0f + expf(-1.702f * x));
    case BiasActivation::kRelu:
      return x > 0.0f ? x : 0.0f;
  }
  return x;
}

__global__ void BiasActivationKernel(float* y, int64_t total, int n, const float* bias,
                                     BiasActivation act) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    y[i] = Activate(bias != nullptr ? y[i] + bias[i % n] : y[i], act);
  }
}

__global__ void AddPeriodicKernel(float* y, int64_t n, const float* v, int64_t period) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] += v[i % period];
  }
}

__global__ void Im2ColKernel(const float* x, ConvWindows w, int t0, int rows, int64_t total,
                             float* cols) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t width = static_cast<int64_t>(w.kernel) * w.channels, block = rows * width;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t g = i / block, r = i % block / width, kc = i % width;
    const int k = static_cast<int>(kc / w.channels);
    const int64_t c = g * w.channels + kc % w.channels;
    const int64_t src = (t0 + r) * w.stride + k - w.pad;
    cols[i] = src >= 0 && src < w.in_frames ? x[src * w.ld + c * w.channel_stride] : 0.0f;
  }
}

__global__ void PatchifyKernel(const float* pixels, int channels, int size, int p, int64_t total,
                               float* cols) {
  AllowSuccessor();
  WaitForPredecessor();
  const int g = size / p;
  const int64_t cpp = static_cast<int64_t>(channels) * p * p, patches = int64_t{g} * g;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / cpp, e = i % cpp;
    const int64_t b = row / patches, q = row % patches;
    const int64_t gy = q / g, gx = q % g;
    const int64_t k = e / (p * p), ky = e / p % p, kx = e % p;
    cols[i] = pixels[((b * channels + k) * size + gy * p + ky) * size + gx * p + kx];
  }
}

// A block owns 32 channels (threadIdx.x) and walks time in kTimeLanes strided lanes
// (threadIdx.y); the lanes' double sums meet in shared memory in a fixed order.
constexpr int kTimeLanes = 16;

__device__ __forceinline__ double SumOverLanes(double v, double (&part)[kTimeLanes][32]) {
  part[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  double sum = 0.0;
  for (int l = 0; l < kTimeLanes; ++l) sum += part[l][threadIdx.x];
  __syncthreads();  // part is rewritten by the next call
  return sum;
}

__global__ void __launch_bounds__(32 * kTimeLanes)
    ChannelNormGeluKernel(float* x, int t, int c, const float* w, const float* b, float eps) {
  __shared__ double part[kTimeLanes][32];
  AllowSuccessor();
  WaitForPredecessor();
  const int ch = static_cast<int>(blockIdx.x) * 32 + static_cast<int>(threadIdx.x);
  const bool active = ch < c;
  double sum = 0.0;
  if (active) {
    for (int r = threadIdx.y; r < t; r += kTimeLanes) sum += x[static_cast<int64_t>(r) * c + ch];
  }
  const double mean = SumOverLanes(sum, part) / t;
  double sq = 0.0;
  if (active) {
    for (int r = threadIdx.y; r < t; r += kTimeLanes) {
      const double d = x[static_cast<int64_t>(r) * c + ch] - mean;
      sq += d * d;
    }
  }
  const double var = SumOverLanes(sq, part) / t;
  if (!active) return;
  const double inv = 1.0 / sqrt(var + eps);
  const float scale = static_cast<float>(w[ch] * inv);
  const float shift = static_cast<float>(b[ch] - mean * w[ch] * inv);
  for (int r = threadIdx.y; r < t; r += kTimeLanes) {
    float* v = x + static_cast<int64_t>(r) * c + ch;
    *v = Activate(*v * scale + shift, BiasActivation::kGeluErf);
  }
}

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// op over the block (blockDim.x a multiple of 32), in every thread; `identity` is op's neutral
// value and `scratch` holds one float per warp. Synchronises the block.
template <typename Op>
__device__ __forceinline__ float BlockReduce(float v, float* scratch, Op op, float identity) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) t = op(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

constexpr int kSoftmaxThreads = 256;

// One block per row.
__global__ void __launch_bounds__(kSoftmaxThreads)
    ScaledSoftmaxKernel(float* s, int n, float scale, int causal_period) {
  __shared__ float scratch[kSoftmaxThreads / 32];
  AllowSuccessor();
  WaitForPredecessor();
  float* row = s + static_cast<int64_t>(blockIdx.x) * n;
  const int kept = causal_period > 0 ? static_cast<int>(blockIdx.x % causal_period) + 1 : n;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < kept; i += blockDim.x) m = fmaxf(m, row[i]);
  m = BlockReduce(m, scratch, Max(), -INFINITY);
  const float shift = m * scale;  // max(scale * s_i) = scale * max(s_i) for scale > 0
  float sum = 0.0f;
  for (int i = threadIdx.x; i < kept; i += blockDim.x) {
    const float e = expf(row[i] * scale - shift);
    row[i] = e;
    sum += e;
  }
  sum = BlockReduce(sum, scratch, Sum(), 0.0f);
  const float inv = 1.0f / sum;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = i < kept ? row[i] * inv : 0.0f;
}

// One thread per (row, head).
__global__ void WavlmGateKernel(const float* h, int64_t rows, int t, int heads, int hd,
                                const float* __restrict__ w, const float* __restrict__ b,
                                const float* __restrict__ c, float* gate) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= rows * heads) return;
  const int64_t r = id / heads;
  const int head = static_cast<int>(id % heads);
  const float* v = h + r * heads * hd + static_cast<int64_t>(head) * hd;
  float p[8];
  for (int k = 0; k < 8; ++k) {
    float acc = 0.0f;
    for (int j = 0; j < hd; ++j) acc += w[k * hd + j] * v[j];
    p[k] = acc + b[k];
  }
  const float ga = 1.0f / (1.0f + expf(-(p[0] + p[1] + p[2] + p[3])));
  const float gb = 1.0f / (1.0f + expf(-(p[4] + p[5] + p[6] + p[7])));
  const int64_t seq = r / t, i = r % t;
  gate[(seq * heads + head) * t + i] = ga * (gb * c[head] - 1.0f) + 2.0f;
}

// One block per (head, query) row.
__global__ void __launch_bounds__(kSoftmaxThreads)
    BiasedSoftmaxKernel(float* s, int t, float scale, const float* gate, const float* rel) {
  __shared__ float scratch[kSoftmaxThreads / 32];
  AllowSuccessor();
  WaitForPredecessor();
  const int head = static_cast<int>(blockIdx.x / t), i = static_cast<int>(blockIdx.x % t);
  float* row = s + static_cast<int64_t>(blockIdx.x) * t;
  const float g = gate[blockIdx.x];
  const float* bias = rel + static_cast<int64_t>(head) * (2 * t - 1) + (t - 1 - i);
  float m = -INFINITY;
  for (int j = threadIdx.x; j < t; j += blockDim.x) {
    const float v = row[j] * scale + g * bias[j];
    row[j] = v;
    m = fmaxf(m, v);
  }
  m = BlockReduce(m, scratch, Max(), -INFINITY);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < t; j += blockDim.x) {
    const float e = expf(row[j] - m);
    row[j] = e;
    sum += e;
  }
  sum = BlockReduce(sum, scratch, Sum(), 0.0f);
  const float inv = 1.0f / sum;
  for (int j = threadIdx.x; j < t; j += blockDim.x) row[j] *= inv;
}

// One thread per rotated pair: (row, q or k, head, i < hd / 2).
__global__ void RotaryKernel(float* qkv, int64_t total, int t, int heads, int hd,
                             const float* __restrict__ inv_freq) {
  AllowSuccessor();
  WaitForPredecessor();
  const int half = hd / 2, d = heads * hd;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; id < total;
       id += stride) {
    const int64_t row = id / d;
    const int rem = static_cast<int>(id % d);  // [q or k][head][i]: d / 2 pairs each
    const int which = rem / (d / 2), h = rem % (d / 2) / half, i = rem % half;
    const float angle = static_cast<float>(row % t) * inv_freq[i];
    const float c = static_cast<float>(cos(static_cast<double>(angle)));
    const float s = static_cast<float>(sin(static_cast<double>(angle)));
    float* x = qkv + row * 3 * d + which * d + h * hd;
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
  }
}

__global__ void SiluGateKernel(const float* __restrict__ gu, int64_t total, int f,
                               float* __restrict__ act) {
  AllowSuccessor();
  WaitForPredecessor();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; id < total;
       id += stride) {
    const int64_t r = id / f, i = id % f;
    const float g = gu[r * 2 * f + i], u = gu[r * 2 * f + f + i];
    act[id] = g * (1.0f / (1.0f + expf(-g))) * u;
  }
}

// Blocks for a grid-stride loop over n elements.
dim3 StrideBlocks(int64_t n, int threads) {
  return dim3(static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65536)));
}

}  // namespace

absl::Status LaunchWavlmGate(cudaStream_t stream, const float* h, int64_t rows, int t, int heads,
                             int hd, const float* w, const float* b, const float* c, float* gate) {
  const int64_t n = rows * heads;
  if (n == 0) return absl::OkStatus();
  constexpr int kThreads = 128;
  return Launch("WavlmGate", WavlmGateKernel,
                dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads)), dim3(kThreads), 0,
                stream, h, rows, t, heads, hd, w, b, c, gate);
}

absl::Status LaunchBiasedSoftmax(cudaStream_t stream, float* s, int heads, int t, float scale,
                                 const float* gate, const float* rel) {
  const int64_t rows = int64_t{heads} * t;
  if (rows == 0) return absl::OkStatus();
  return Launch("BiasedSoftmax", BiasedSoftmaxKernel, dim3(static_cast<unsigned>(rows)),
                dim3(kSoftmaxThreads), 0, stream, s, t, scale, gate, rel);
}

absl::Status LaunchBiasActivation(cudaStream_t stream, float* y, int64_t rows, int n,
                                  const float* bias, BiasActivation act) {
  const int64_t total = rows * n;
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  return Launch("BiasActivation", BiasActivationKernel, StrideBlocks(total, kThreads),
                dim3(kThreads), 0, stream, y, total, n, bias, act);
}

absl::Status LaunchAddPeriodic(cudaStream_t stream, float* y, int64_t n, const float* v,
                               int64_t period) {
  if (n == 0) return absl::OkStatus();
  if (period <= 0) return absl::InvalidArgumentError("AddPeriodic: period must be > 0");
  constexpr int kThreads = 256;
  return Launch("AddPeriodic", AddPeriodicKernel, StrideBlocks(n, kThreads), dim3(kThreads), 0,
                stream, y, n, v, period);
}

absl::Status LaunchIm2Col(cudaStream_t stream, const float* x, const ConvWindows& w, int t0,
                          int rows, float* cols) {
  if (w.kernel <= 0 || w.stride <= 0 || w.pad < 0 || w.channels <= 0 || w.ld <= 0 ||
      w.channel_stride <= 0 || w.groups <= 0 || t0 < 0 || rows < 0 || t0 + rows > w.out_frames) {
    return absl::InvalidArgumentError(
        absl::StrCat("Im2Col: kernel ", w.kernel, ", stride ", w.stride, ", pad ", w.pad, ", ",
                     w.groups, " groups of ", w.channels, " channels of rows of ", w.ld,
                     ", output rows [", t0, ", ", t0 + rows, ") of ", w.out_frames));
  }
  const int64_t total = int64_t{w.groups} * rows * w.kernel * w.channels;
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  return Launch("Im2Col", Im2ColKernel, StrideBlocks(total, kThreads), dim3(kThreads), 0, stream, x,
                w, t0, rows, total, cols);
}

absl::Status LaunchPatchify(cudaStream_t stream, const float* pixels, int batch, int channels,
                            int size, int p, float* cols) {
  if (batch < 0 || channels <= 0 || p <= 0 || size < p || size % p != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Patchify: ", batch, " images of ", channels,
                                                   " x ", size, " x ", size, ", patches of ", p));
  }
  const int64_t total = int64_t{batch} * size * size * channels;  // every pixel, once
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  return Launch("Patchify", PatchifyKernel, StrideBlocks(total, kThreads), dim3(kThreads), 0,
                stream, pixels, channels, size, p, total, cols);
}

absl::Status LaunchChannelNormGelu(cudaStream_t stream, float* x, int t, int c, const float* w,
                                   const float* b, float eps) {
  if (t <= 0 || c <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ChannelNormGelu: ", t, " frames of ", c, " channels (both must be > 0)"));
  }
  return Launch("ChannelNormGelu", ChannelNormGeluKernel, dim3((c + 31) / 32), dim3(32, kTimeLanes),
                0, stream, x, t, c, w, b, eps);
}

absl::Status LaunchScaledSoftmax(cudaStream_t stream, float* s, int64_t rows, int n, float scale,
                                 int causal_period) {
  if (rows == 0 || n == 0) return absl::OkStatus();
  if (rows > 0x7fffffff) return absl::InvalidArgumentError("ScaledSoftmax: too many rows");
  return Launch("ScaledSoftmax", ScaledSoftmaxKernel, dim3(static_cast<unsigned>(rows)),
                dim3(kSoftmaxThreads), 0, stream, s, n, scale, causal_period);
}

absl::Status LaunchRotary(cudaStream_t stream, float* qkv, int64_t rows, int t, int heads, int hd,
                          const float* inv_freq) {
  if (rows < 0 || t <= 0 || heads <= 0 || hd <= 0 || hd % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rotary: ", rows, " rows, sequences of ", t,
                                                   ", ", heads, " heads of ", hd,
                                                   " (head width even, all > 0)"));
  }
  const int64_t total = rows * heads * hd;  // (q, k) x heads x hd / 2 pairs a row
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  return Launch("Rotary", RotaryKernel, StrideBlocks(total, kThreads), dim3(kThreads), 0, stream,
                qkv, total, t, heads, hd, inv_freq);
}

absl::Status LaunchSiluGate(cudaStream_t stream, const float* gu, int64_t rows, int f, float* act) {
  if (rows < 0 || f < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SiluGate: ", rows, " rows of ", f, " pairs"));
  }
  const int64_t total = rows * f;
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  return Launch("SiluGate", SiluGateKernel, StrideBlocks(total, kThreads), dim3(kThreads), 0,
                stream, gu, total, f, act);
}

}  // namespace modrwkv::encoders::cuda
