#include "encoders/cuda/cuda_adapter.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/rwkv7_ops.cuh"

namespace modrwkv::encoders::cuda {

using modrwkv::cuda::LaunchLayerNorm;

bool CudaAdapter::Supports(const AdapterChain& chain) {
  return std::all_of(chain.layers().begin(), chain.layers().end(), [](const auto& l) {
    return l.spec.op != AdapterOp::kPixelShuffle &&
           l.spec.op != AdapterOp::kTransformerEncoderLayer;
  });
}

absl::StatusOr<std::unique_ptr<CudaAdapter>> CudaAdapter::Create(const AdapterChain& chain,
                                                                 int device, EncoderMath math) {
  if (!Supports(chain)) {
    return absl::UnimplementedError("the adapter has a layer the GPU runner does not run");
  }
  std::unique_ptr<CudaAdapter> a(new CudaAdapter());
  a->input_dim_ = chain.input_dim();
  a->output_dim_ = chain.output_dim();
  MODRWKV_ASSIGN_OR_RETURN(a->dev_, EncoderDevice::Open(device, math, "the adapter"));
  const EncoderDevice& dev = *a->dev_;
  for (const AdapterChain::Layer& l : chain.layers()) {
    Layer g;
    g.spec = l.spec;
    g.in_dim = l.in_dim;
    g.out_dim = l.out_dim;
    if (l.w.rows > 0) {
      MODRWKV_ASSIGN_OR_RETURN(g.w, dev.Upload(l.w));
    }
    // Vectors a layer has not stay unallocated.
    for (auto [dst, src] :
         {std::pair{&g.bias, &l.bias}, {&g.gamma, &l.gamma}, {&g.beta, &l.beta}}) {
      if (src->empty()) continue;
      MODRWKV_ASSIGN_OR_RETURN(*dst, dev.Upload(*src));
    }
    a->layers_.push_back(std::move(g));
  }
  return a;
}

AdapterFactory CudaAdapter::Factory(int device, EncoderMath math) {
  return
      [device, math](const AdapterChain& chain) -> absl::StatusOr<std::unique_ptr<AdapterRunner>> {
        if (!Supports(chain)) return std::unique_ptr<AdapterRunner>();
        MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<CudaAdapter> a, Create(chain, device, math));
        return std::unique_ptr<AdapterRunner>(std::move(a));
      };
}

// adapter_chain.cc's Run, layer by layer, ping-ponging between two buffers.
absl::Status CudaAdapter::Run(const float* in, int rows, int out_rows, float* out) const {
  if (rows < 1 || out_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter: ", rows, " rows in, ", out_rows, " out"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  MODRWKV_RETURN_IF_ERROR(dev_->Use());
  const EncoderDevice& dev = *dev_;
  cudaStream_t st = dev.stream();
  // Rows and widths of every layer's output, for the scratch's size.
  std::vector<int> t(layers_.size() + 1);
  t[0] = rows;
  size_t most = static_cast<size_t>(rows) * input_dim_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::string why;
    t[i + 1] = AdapterChain::LayerRows(layers_[i].spec, t[i], &why);
    if (t[i + 1] < 1)
      return absl::InvalidArgumentError(absl::StrCat("adapter layer ", i, ": ", why));
    most = std::max(most, static_cast<size_t>(t[i + 1]) * layers_[i].out_dim);
  }
  if (t.back() != out_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter: ", rows, " rows give ", t.back(), " rows, not ", out_rows));
  }
  MODRWKV_RETURN_IF_ERROR(s_.a.Reserve(most));
  MODRWKV_RETURN_IF_ERROR(s_.b.Reserve(most));
  float* cur = s_.a.get();
  float* next = s_.b.get();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      cur, in, static_cast<size_t>(rows) * input_dim_ * sizeof(float), cudaMemcpyHostToDevice, st));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const int n = t[i], n_out = t[i + 1];
    switch (l.spec.op) {
      case AdapterOp::kConv1d: {
        const ConvWindows w{.in_frames = n,
                            .out_frames = n_out,
                            .kernel = l.spec.kernel,
                            .stride = l.spec.stride,
                            .pad = l.spec.padding,
                            .ld = l.in_dim,
                            .channels = l.in_dim};
        MODRWKV_RETURN_IF_ERROR(
            dev.Conv1d(l.w.get(), l.out_dim, w, cur, next, l.out_dim, &s_.cols));
        MODRWKV_RETURN_IF_ERROR(
            LaunchBiasActivation(st, next, n_out, l.out_dim, l.bias.get(), BiasActivation::kNone));
        std::swap(cur, next);
        break;
      }
      case AdapterOp::kLinear:
        MODRWKV_RETURN_IF_ERROR(dev.Gemm(l.w.get(), l.out_dim, l.in_dim, cur, n, next, 0.0f));
        MODRWKV_RETURN_IF_ERROR(
            LaunchBiasActivation(st, next, n, l.out_dim, l.bias.get(), BiasActivation::kNone));
        std::swap(cur, next);
        break;
      case AdapterOp::kRelu:
        MODRWKV_RETURN_IF_ERROR(
            LaunchBiasActivation(st, cur, n, l.in_dim, nullptr, BiasActivation::kRelu));
        break;
      case AdapterOp::kGelu:
        MODRWKV_RETURN_IF_ERROR(LaunchBiasActivation(
            st, cur, n, l.in_dim, nullptr,
            l.spec.gelu_tanh ? BiasActivation::kGeluTanh : BiasActivation::kGeluErf));
        break;
      case AdapterOp::kLayerNorm:
        MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, cur, nullptr, n, l.in_dim, l.gamma.get(),
                                                l.beta.get(), l.spec.eps, cur));
        break;
      case AdapterOp::kResidualLayerNorm: {
        const size_t count = static_cast<size_t>(n) * l.in_dim;
        MODRWKV_RETURN_IF_ERROR(s_.norm.Reserve(count));
        MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, cur, nullptr, n, l.in_dim, l.gamma.get(),
                                                l.beta.get(), l.spec.eps, s_.norm.get()));
        MODRWKV_RETURN_IF_ERROR(LaunchAddPeriodic(st, cur, count, s_.norm.get(), count));
        break;
      }
      case AdapterOp::kPixelShuffle:
      case AdapterOp::kTransformerEncoderLayer:
        return absl::InternalError(
            "adapter: a layer the GPU runner does not run");  // Create refused
    }
  }
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out, cur, static_cast<size_t>(out_rows) * output_dim_ * sizeof(float),
                      cudaMemcpyDeviceToHost, st));
  return modrwkv::cuda::CudaStatus(cudaStreamSynchronize(st), "the adapter");
}

}  // namespace modrwkv::encoders::cuda
