// What the GPU layer stacks of the encoders (CudaLayerStack, CudaWavlmLayers) share: a device, a
// stream on it, a cuBLAS handle on that stream, f32 uploads, the row-major product and the two
// products of multi-head attention, convolutions as products. f32 throughout; TF32 tensor cores
// where asked for (EncoderMath).
#pragma once

#include <cublas_v2.h>

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/cpu/linear.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {

class DeviceScratch;

// How the encoders' f32 products run: plain f32 (the CPU's results up to the order of float sums;
// the default), or on TF32 tensor cores (cuBLAS's CUBLAS_TF32_TENSOR_OP_MATH: each input rounded
// to 10 mantissa bits, about 5e-4 relative, the sums still f32), at several times the rate.
enum class EncoderMath { kF32, kTf32 };

class EncoderDevice {
 public:
  // FAILED_PRECONDITION without device `device` or cuBLAS. `what` names the caller in errors.
  static absl::StatusOr<std::unique_ptr<EncoderDevice>> Open(int device, EncoderMath math,
                                                             const char* what);
  ~EncoderDevice();
  EncoderDevice(const EncoderDevice&) = delete;
  EncoderDevice& operator=(const EncoderDevice&) = delete;

  // Makes the device current on the calling thread (the current device is per host thread).
  absl::Status Use() const;
  cudaStream_t stream() const { return stream_.get(); }
  int device() const { return device_; }

  // Copies to the device (at load), finished on return; on the stream, so call after Open.
  absl::StatusOr<modrwkv::cuda::DeviceBuffer<float>> Upload(const std::vector<float>& host) const;
  // W[out][in] in f32, whatever its CPU type and layout (cpu::UnpackMatrix).
  absl::StatusOr<modrwkv::cuda::DeviceBuffer<float>> Upload(const cpu::Matrix& m) const;

  // y[rows][out] = x[rows][in] * w^T + beta * y, all row-major.
  absl::Status Gemm(const float* w, int out, int in, const float* x, int rows, float* y,
                    float beta) const {
    return Gemm(w, out, in, x, in, rows, y, out, beta);
  }
  // The same with rows ldx floats apart in x and ldy in y (ldx >= in, ldy >= out).
  absl::Status Gemm(const float* w, int out, int in, const float* x, int64_t ldx, int rows,
                    float* y, int64_t ldy, float beta) const;
  // A time-major 1-D convolution: y[t * ldy + o] = sum over taps k and channels c of
  // w[o][k * channels + c] * window(t, k, c) (ConvWindows), for t < out_frames, o < out: one
  // product over the windows, copied out in slices of at most `slice_floats` (`cols` grows to
  // hold one slice) unless they are the input's own rows (no padding, no overlap, time-major
  // rows of just the channels). Grouped (windows.groups > 1): output o belongs to group
  // o / (out / groups) and reads that group's channels; one batched product over the groups.
  static constexpr int64_t kConvSliceFloats = int64_t{16} << 20;  // 64 MB
  absl::Status Conv1d(const float* w, int out, const ConvWindows& windows, const float* x, float* y,
                      int64_t ldy, DeviceScratch* cols,
                      int64_t slice_floats = kConvSliceFloats) const;
  // One sequence of t rows of qkv ([t][3 * heads * hd]: q | k | v, head h at column h * hd of
  // each): scores[h] = Q_h K_h^T ([heads][t queries][t keys], unscaled) for every head at once.
  absl::Status HeadScores(const float* qkv, int t, int heads, int hd, float* scores) const;
  // Then out rows ([t][heads * hd], head h at column h * hd) = P_h V_h with P the scores after
  // their softmax.
  absl::Status HeadValues(const float* qkv, const float* probs, int t, int heads, int hd,
                          float* out) const;

 private:
  explicit EncoderDevice(int device) : device_(device) {}

  const int device_;
  const modrwkv::cuda::CublasApi* blas_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  modrwkv::cuda::CudaStream stream_;
};

// The factory an encoder takes for its runner interface `Base` (e.g. LayerStackFactory: a
// std::function of the weights and shape), building a `Runner` on `device` with
// Runner::Create(weights, shape, device, math).
template <typename Base, typename Runner>
auto RunnerFactory(int device, EncoderMath math) {
  return [device, math](const auto& weights,
                        const auto& shape) -> absl::StatusOr<std::unique_ptr<Base>> {
    absl::StatusOr<std::unique_ptr<Runner>> r = Runner::Create(weights, shape, device, math);
    if (!r.ok()) return r.status();
    return std::unique_ptr<Base>(*std::move(r));
  };
}

// The weights every encoder layer has (LayerNorms, q/k/v, output, two-layer MLP), on the device
// in f32, matrices [out][in].
struct DeviceLayerWeights {
  modrwkv::cuda::DeviceBuffer<float> ln1_w, ln1_b, ln2_w, ln2_b, qkv, qkv_b, out, out_b, fc1, fc1_b,
      fc2, fc2_b;
};

// Whether a host layer (EncoderLayerWeights, WavlmLayerWeights: the same field names) has width
// d and MLP width f: qkv [3d, d], out [d, d], fc1 [f, d], fc2 [d, f], biases and LayerNorms to
// match (the kernels read d, 3d or f floats of each, whatever was uploaded).
template <typename HostLayer>
bool HasLayerShape(const HostLayer& w, int d, int f) {
  const size_t ud = d;
  return w.qkv.rows == 3 * d && w.qkv.cols == d && w.out.rows == d && w.out.cols == d &&
         w.fc1.rows == f && w.fc1.cols == d && w.fc2.rows == d && w.fc2.cols == f &&
         w.ln1_w.size() == ud && w.ln1_b.size() == ud && w.ln2_w.size() == ud &&
         w.ln2_b.size() == ud && w.qkv_b.size() == 3 * ud && w.out_b.size() == ud &&
         w.fc1_b.size() == static_cast<size_t>(f) && w.fc2_b.size() == ud;
}

// Uploads a host layer's common weights.
template <typename HostLayer>
absl::StatusOr<DeviceLayerWeights> UploadLayer(const EncoderDevice& dev, const HostLayer& w) {
  DeviceLayerWeights l;
  for (auto [dst, src] : {std::pair{&l.ln1_w, &w.ln1_w},
                          {&l.ln1_b, &w.ln1_b},
                          {&l.ln2_w, &w.ln2_w},
                          {&l.ln2_b, &w.ln2_b},
                          {&l.qkv_b, &w.qkv_b},
                          {&l.out_b, &w.out_b},
                          {&l.fc1_b, &w.fc1_b},
                          {&l.fc2_b, &w.fc2_b}}) {
    absl::StatusOr<modrwkv::cuda::DeviceBuffer<float>> up = dev.Upload(*src);
    if (!up.ok()) return up.status();
    *dst = *std::move(up);
  }
  for (auto [dst, src] :
       {std::pair{&l.qkv, &w.qkv}, {&l.out, &w.out}, {&l.fc1, &w.fc1}, {&l.fc2, &w.fc2}}) {
    absl::StatusOr<modrwkv::cuda::DeviceBuffer<float>> up = dev.Upload(*src);
    if (!up.ok()) return up.status();
    *dst = *std::move(up);
  }
  return l;
}

// Device floats that grow to the largest count reserved; the contents are not kept across growth.
class DeviceScratch {
 public:
  absl::Status Reserve(size_t count);
  float* get() const { return buf_.get(); }

 private:
  modrwkv::cuda::DeviceBuffer<float> buf_;
  size_t capacity_ = 0;
};

// A layer's activations over `rows` rows of width d (MLP width f), and one sequence's attention
// scores ([heads][t][t]).
struct LayerScratch {
  DeviceScratch x, h, qkv, attn, mlp, scores;
  absl::Status Reserve(size_t rows, size_t d, size_t f, size_t heads, size_t t);
};

}  // namespace modrwkv::encoders::cuda
