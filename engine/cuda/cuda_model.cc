#include "engine/cuda/cuda_model.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/thread_pool.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/layer_layout.h"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/sample.cuh"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv_decode.cuh"

namespace modrwkv::cuda {
namespace {

std::vector<float> ToF32(const WeightRef& ref) {
  if (!ref.present()) return {};
  std::vector<float> v(static_cast<size_t>(ref.view->numel()));
  ConvertToF32(ref.view->dtype, ref.view->data, v.size(), v.data());
  return v;
}

template <typename T>
absl::Status Grow(DeviceBuffer<T>* buf, size_t count) {
  MODRWKV_ASSIGN_OR_RETURN(*buf, AllocDevice<T>(count));
  return absl::OkStatus();
}

}  // namespace

CudaModel::~CudaModel() {
  cudaSetDevice(device_);  // the buffers and the handle below belong to it
  if (cublas_ != nullptr) blas_->Destroy(cublas_);
}

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Create(
    const std::map<std::string, TensorView>& tensors, const ModelOptions& options, int device) {
  MODRWKV_RETURN_IF_ERROR(options.Validate());
  MODRWKV_ASSIGN_OR_RETURN(const int devices, CudaDeviceCount());
  if (device < 0 || device >= devices) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "device cuda:%d asked for, but %d CUDA device(s) are visible", device, devices));
  }
  if (options.weight_type == ModelOptions::WeightType::kI8 ||
      options.weight_type == ModelOptions::WeightType::kI4) {
    return absl::UnimplementedError(
        "the CUDA backend keeps f32, bf16 or f16 weights on the device (int8 and int4 are not "
        "built): use dtype auto, f32, bf16 or f16");
  }
  MODRWKV_ASSIGN_OR_RETURN(Rwkv7Refs refs, ResolveRwkv7(tensors));
  if (refs.config.head_size != 64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the CUDA backend takes head size 64, the model has %d", refs.config.head_size));
  }
  std::unique_ptr<CudaModel> m(new CudaModel());
  MODRWKV_RETURN_IF_ERROR(m->Init(refs, options, device));
  return m;
}

absl::StatusOr<CudaModel::Matrix> CudaModel::Upload(const WeightRef& ref, bool input_major) {
  Matrix m;
  if (!ref.present()) return m;
  const std::vector<int64_t>& shape = ref.view->shape;
  std::vector<float> host = ToF32(ref);
  // [out][in] as the Linear convention; the file may hold [in][out].
  m.out = static_cast<int>(ref.transposed ? shape[1] : shape[0]);
  m.in = static_cast<int>(ref.transposed ? shape[0] : shape[1]);
  m.input_major = input_major;
  if (ref.transposed != input_major) {  // to [out][in], or [in][out] for an input-major matrix
    const int rows = ref.transposed ? m.in : m.out, cols = ref.transposed ? m.out : m.in;
    std::vector<float> t(host.size());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c)
        t[static_cast<size_t>(c) * rows + r] = host[static_cast<size_t>(r) * cols + c];
    }
    host.swap(t);
  }
  if (half_) {
    if (m.in % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor %s has %d inputs; 16-bit weights on the GPU need an even count",
                          ref.canonical_name, m.in));
    }
    std::vector<uint16_t> bits(host.size());
    if (*half_ == HalfType::kBF16) {
      for (size_t i = 0; i < host.size(); ++i) bits[i] = F32ToBF16(host[i]);
    } else {
      for (size_t i = 0; i < host.size(); ++i) {
        if (!(std::fabs(host[i]) <= kF16Max)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "tensor %s holds %g at element %d, outside fp16's range (|x| <= %g): use dtype bf16",
              ref.canonical_name, host[i], i, kF16Max));
        }
        bits[i] = F32ToF16(host[i]);
      }
    }
    MODRWKV_ASSIGN_OR_RETURN(m.half, AllocDevice<uint16_t>(bits.size()));
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(m.half.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
    return m;
  }
  MODRWKV_ASSIGN_OR_RETURN(m.data, AllocDevice<float>(host.size()));
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(m.data.get(), host.data(), host.size() * 4, cudaMemcpyHostToDevice));
  return m;
}

absl::Status CudaModel::Init(const Rwkv7Refs& refs, const ModelOptions& options, int device) {
  const ModelConfig& cfg = refs.config;
  const int C = cfg.n_embd;
  device_ = device;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  MODRWKV_ASSIGN_OR_RETURN(stream_, CreateStream());
  MODRWKV_ASSIGN_OR_RETURN(step_begin_, CreateEvent(cudaEventDefault));
  MODRWKV_ASSIGN_OR_RETURN(step_end_, CreateEvent(cudaEventDefault));
  MODRWKV_ASSIGN_OR_RETURN(blas_, Cublas());
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas_->Create(&cublas_));
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas_->SetStream(cublas_, stream_.get()));
  // A workspace of our own (after SetStream, which resets it): cuBLAS then allocates nothing while
  // a step is captured into a CUDA graph, and eager and captured products choose alike.
  constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  MODRWKV_ASSIGN_OR_RETURN(cublas_workspace_, AllocDevice<uint8_t>(kWorkspaceBytes));
  MODRWKV_CUBLAS_RETURN_IF_ERROR(
      blas_->SetWorkspace(cublas_, cublas_workspace_.get(), kWorkspaceBytes));
  graphs_enabled_ = options.cuda_graphs;
  wkv_form_ = options.cuda_chunked_wkv ? WkvForm::kAuto : WkvForm::kWalk;
  fused_prefill_ = options.cuda_fused_prefill;
  bf16_activation_rows_ = options.cuda_bf16_activation_rows;
  // auto stays f32 on the GPU for now: bf16 and f16 are options until measured there.
  if (options.weight_type == ModelOptions::WeightType::kBF16) half_ = HalfType::kBF16;
  if (options.weight_type == ModelOptions::WeightType::kF16) half_ = HalfType::kF16;
  sparse_ffn_ = options.sparse_ffn && half_.has_value();
  // f32 weights: plain fp32 products (no TF32), so that logits stay within float rounding of the
  // CPU's. 16-bit weights: the default mode, whose 16-bit products run on tensor cores.
  MODRWKV_CUBLAS_RETURN_IF_ERROR(
      blas_->SetMathMode(cublas_, half_ ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH));

  host_pool_ = std::make_unique<cpu::ThreadPool>(options.threads);
  info_.config = cfg;
  info_.backend = "cuda";
  info_.weight_dtype = !half_ ? "f32" : *half_ == HalfType::kBF16 ? "bf16" : "f16";
  info_.parameter_count = refs.parameter_count;
  info_.fingerprint = FingerprintRwkv7(refs);

  emb_ = ToF32(refs.emb);
  if (half_ == HalfType::kBF16) {  // as the CPU backend keeps it with bf16 weights
    for (float& v : emb_) v = BF16ToF32(F32ToBF16(v));
  }
  if (refs.emb.transposed) return absl::InvalidArgumentError("a transposed embedding table");
  auto pair = [&](const WeightRef& w, const WeightRef& b,
                  DeviceBuffer<float>* out) -> absl::Status {
    std::vector<float> host = ToF32(w);
    const std::vector<float> bias = ToF32(b);
    host.insert(host.end(), bias.begin(), bias.end());
    MODRWKV_ASSIGN_OR_RETURN(*out, AllocDevice<float>(host.size()));
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(out->get(), host.data(), host.size() * 4, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  };
  MODRWKV_RETURN_IF_ERROR(pair(refs.ln0_w, refs.ln0_b, &ln0_));
  MODRWKV_RETURN_IF_ERROR(pair(refs.ln_out_w, refs.ln_out_b, &ln_out_));
  MODRWKV_ASSIGN_OR_RETURN(head_, Upload(refs.head));
  head_.op = "head";
  const int64_t mat_bytes = half_ ? 2 : 4;
  int64_t decode_bytes = mat_bytes * head_.out * head_.in + 4LL * C;

  layers_.resize(refs.layers.size());
  for (size_t li = 0; li < refs.layers.size(); ++li) {
    const Rwkv7LayerRefs& r = refs.layers[li];
    Layer& l = layers_[li];
    std::vector<float> vec(static_cast<size_t>(kNumVec) * C, 0.0f);
    const WeightRef* order[kNumVec] = {&r.ln1_w, &r.ln1_b, &r.ln2_w, &r.ln2_b,  &r.x_r,
                                       &r.x_w,   &r.x_k,   &r.x_v,   &r.x_a,    &r.x_g,
                                       &r.w0,    &r.a0,    &r.v0,    &r.k_k,    &r.k_a,
                                       &r.r_k,   &r.lnx_w, &r.lnx_b, &r.ffn_x_k};
    for (int i = 0; i < kNumVec; ++i) {
      const std::vector<float> v = ToF32(*order[i]);  // v0 may be absent in layer 0
      if (!v.empty() && v.size() != static_cast<size_t>(C)) {
        return absl::InvalidArgumentError(absl::StrFormat("tensor %s has %d elements, expected %d",
                                                          order[i]->canonical_name, v.size(), C));
      }
      std::copy(v.begin(), v.end(), vec.begin() + static_cast<int64_t>(i) * C);
    }
    MODRWKV_ASSIGN_OR_RETURN(l.vec, AllocDevice<float>(vec.size()));
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(l.vec.get(), vec.data(), vec.size() * 4, cudaMemcpyHostToDevice));
    // Each with its name in the op profile: the projections by role, the LoRA pairs together.
    constexpr const char* kLora = "LoRA (w, a, v, g)";
    struct {
      Matrix* m;
      const WeightRef* ref;
      const char* op;
    } mats[] = {{&l.w1, &r.w1, kLora},
                {&l.w2, &r.w2, kLora},
                {&l.a1, &r.a1, kLora},
                {&l.a2, &r.a2, kLora},
                {&l.v1, &r.v1, kLora},
                {&l.v2, &r.v2, kLora},
                {&l.g1, &r.g1, kLora},
                {&l.g2, &r.g2, kLora},
                {&l.wr, &r.wr, "r, k, v"},
                {&l.wk, &r.wk, "r, k, v"},
                {&l.wv, &r.wv, "r, k, v"},
                {&l.wo, &r.wo, "output"},
                {&l.ffn_key, &r.ffn_key, "ffn key"},
                {&l.ffn_value, &r.ffn_value, "ffn value"}};
    for (auto& [m, ref, op] : mats) {
      // The value matrix input-major for the sparse products (16-bit weights; out a multiple
      // of 8 for their 16-byte loads).
      const bool input_major = m == &l.ffn_value && sparse_ffn_ && C % 8 == 0;
      MODRWKV_ASSIGN_OR_RETURN(*m, Upload(*ref, input_major));
      m->op = op;
      decode_bytes += mat_bytes * m->out * m->in;
    }
    decode_bytes += 4LL * C * kNumVec;
  }
  // The fused decode kernel's up-projections (every released shape's fit).
  fused_lora_up_ = options.cuda_fused_lora_up && half_.has_value();
  for (size_t li = 0; li < layers_.size() && fused_lora_up_; ++li) {
    const Layer& l = layers_[li];
    int hidden = 0;
    fused_lora_up_ = CheckLoraUpDims({l.w2.in, l.a2.in, l.g2.in, l.v2.in}, li == 0, &hidden).ok();
  }
  info_.decode_bytes_per_token = decode_bytes;
  info_.weight_bytes = decode_bytes;  // the embedding table is in host memory
  if (!layers_.empty() && layers_[0].ffn_value.input_major) {
    const int64_t partial = SparseRowsScratchFloats(C, cfg.ffn_size, kSparseRowsMax);
    if (partial > 0) {
      MODRWKV_ASSIGN_OR_RETURN(sparse_partial_, AllocDevice<float>(partial));
    }
    const int tickets = SparseRowsTickets(C);
    MODRWKV_ASSIGN_OR_RETURN(sparse_tickets_, AllocDevice<unsigned>(tickets));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemset(sparse_tickets_.get(), 0, tickets * sizeof(unsigned)));
    sparse_ = {sparse_partial_.get(), sparse_tickets_.get()};
  }

  state_elem_bytes_ = options.state_type == ModelOptions::StateType::kF16 ? 2 : 4;
  info_.state_dtype = state_elem_bytes_ == 2 ? "f16" : "f32";
  MODRWKV_ASSIGN_OR_RETURN(num_slots_, options.SlotsFor(SlotBytes()));
  layer_floats_ = cfg.StateFloatsPerLayer();
  const size_t state_bytes = static_cast<size_t>(SlotBytes()) * num_slots_;
  MODRWKV_ASSIGN_OR_RETURN(state_, AllocDevice<uint8_t>(state_bytes));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemset(state_.get(), 0, state_bytes));
  pinned_ = std::make_shared<PinnedStates>(info_.config.StateFloats(), state_elem_bytes_, device_);
  // The uploads and the memset ran on the legacy stream, which the model's non-blocking stream
  // does not wait for.
  return CudaStatus(cudaDeviceSynchronize(), "loading the weights");
}

absl::Status CudaModel::UseDevice() const {
  // The current device is per host thread: the scheduler thread that steps the model is not the
  // thread that loaded it.
  return CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
}

absl::Status CudaModel::CheckSlot(int slot, const char* what) const {
  return CheckSlotIndex(slot, num_slots_, what);
}

// A slot's state is [L][layer_floats_] at state_ + slot * StateFloats (contiguous per slot).
absl::Status CudaModel::ResetSlot(int slot) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "reset"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  const int64_t n = SlotBytes();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(state_.get() + slot * n, 0, n, stream_.get()));
  return absl::OkStatus();
}

absl::Status CudaModel::CopySlot(int src, int dst) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(src, "copy source"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  MODRWKV_RETURN_IF_ERROR(CheckSlot(dst, "copy destination"));
  if (src == dst) return absl::OkStatus();
  const int64_t n = SlotBytes();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(state_.get() + dst * n, state_.get() + src * n, n,
                                               cudaMemcpyDeviceToDevice, stream_.get()));
  return absl::OkStatus();
}

// The blob is f32; an f16 pool converts on the host (export and import are not on the hot path).
absl::Status CudaModel::ReadSlot(int slot, absl::Span<float> out) const {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "read"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  MODRWKV_RETURN_IF_ERROR(CheckStateBuffer(out.size(), info_.config));
  const int64_t n = SlotBytes();
  std::vector<uint16_t> halves(state_elem_bytes_ == 2 ? out.size() : 0);
  void* dst = halves.empty() ? static_cast<void*>(out.data()) : halves.data();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, state_.get() + slot * n, n, cudaMemcpyDeviceToHost, stream_.get()));
  MODRWKV_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream_.get()), "ReadSlot"));
  for (size_t i = 0; i < halves.size(); ++i) out[i] = F16ToF32(halves[i]);
  return absl::OkStatus();
}

absl::Status CudaModel::WriteSlot(int slot, absl::Span<const float> in) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "write"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  MODRWKV_RETURN_IF_ERROR(CheckStateBuffer(in.size(), info_.config));
  const int64_t n = SlotBytes();
  std::vector<uint16_t> halves(state_elem_bytes_ == 2 ? in.size() : 0);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = F32ToF16(in[i]);
  const void* src = halves.empty() ? static_cast<const void*>(in.data()) : halves.data();
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(state_.get() + slot * n, src, n, cudaMemcpyHostToDevice, stream_.get()));
  return CudaStatus(cudaStreamSynchronize(stream_.get()), "WriteSlot");
}

absl::StatusOr<std::unique_ptr<ColdState>> CudaModel::OffloadSlot(int slot) {
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "offload"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  absl::StatusOr<PinnedStates::Buffer> buf = pinned_->Take();
  if (!buf.ok()) return Model::OffloadSlot(slot);  // no pinned memory: a pageable copy
  auto cold = std::make_unique<PinnedColdState>(pinned_, *std::move(buf));
  const int64_t n = SlotBytes();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(cold->data(), state_.get() + slot * n, n,
                                               cudaMemcpyDeviceToHost, stream_.get()));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(cold->last_copy(), stream_.get()));
  return cold;
}

absl::Status CudaModel::RestoreSlot(int slot, ColdState& cold) {
  auto* pinned = dynamic_cast<PinnedColdState*>(&cold);
  if (pinned == nullptr || pinned->owner() != pinned_.get()) return Model::RestoreSlot(slot, cold);
  MODRWKV_RETURN_IF_ERROR(CheckSlot(slot, "restore"));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  const int64_t n = SlotBytes();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(state_.get() + slot * n, pinned->data(), n,
                                               cudaMemcpyHostToDevice, stream_.get()));
  return CudaStatus(cudaEventRecord(pinned->last_copy(), stream_.get()), "RestoreSlot");
}

absl::Status CudaModel::EnsureScratch(int rows, int out_rows, int index_ints) {
  const ModelConfig& c = info_.config;
  const size_t C = static_cast<size_t>(c.n_embd);
  if (rows > s_.rows) {
    const size_t rc = static_cast<size_t>(rows) * C;
    for (DeviceBuffer<float>* b : {&s_.x, &s_.xn, &s_.r, &s_.k, &s_.v, &s_.w, &s_.a, &s_.g, &s_.kk,
                                   &s_.y, &s_.v_first, &s_.v_gate}) {
      MODRWKV_RETURN_IF_ERROR(Grow(b, rc));
    }
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.mix, 6 * rc));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.hw, static_cast<size_t>(rows) * c.d_decay));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.ha, static_cast<size_t>(rows) * c.d_aaa));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.hv, static_cast<size_t>(rows) * std::max(c.d_mv, 1)));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.hg, static_cast<size_t>(rows) * c.d_gate));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.hf, static_cast<size_t>(rows) * c.ffn_size));
    if (half_) {
      MODRWKV_RETURN_IF_ERROR(Grow(&s_.mix_h, 6 * rc));
      MODRWKV_RETURN_IF_ERROR(Grow(&s_.hw_h, static_cast<size_t>(rows) * c.d_decay));
      MODRWKV_RETURN_IF_ERROR(Grow(&s_.hg_h, static_cast<size_t>(rows) * c.d_gate));
      MODRWKV_RETURN_IF_ERROR(Grow(&s_.y_h, rc));
      MODRWKV_RETURN_IF_ERROR(Grow(&s_.hf_h, static_cast<size_t>(rows) * c.ffn_size));
    }
    s_.rows = rows;
    DropGraphs();
    void* p = nullptr;
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, static_cast<size_t>(rows) * C * 4));
    host_rows_.reset(static_cast<float*>(p));
  }
  const int out = std::max(out_rows, 1);
  if (out > s_.out_rows) {
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.xo, static_cast<size_t>(out) * C));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.tokens, static_cast<size_t>(out)));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.logprobs, static_cast<size_t>(out)));
    void* g = nullptr;
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMallocHost(&g, static_cast<size_t>(out) * 4));
    host_tokens_.reset(static_cast<int32_t*>(g));
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMallocHost(&g, static_cast<size_t>(out) * sizeof(DeviceLogprobs)));
    host_logprobs_.reset(static_cast<DeviceLogprobs*>(g));
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.logits, static_cast<size_t>(out) * c.vocab_size));
    s_.out_rows = out;
    DropGraphs();
    void* p = nullptr;
    const size_t floats = static_cast<size_t>(out) * (c.vocab_size + C);
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, floats * 4));
    host_out_.reset(static_cast<float*>(p));
  }
  // A layer's products take `rows` rows (the widest input is the FFN's), the head's the output
  // rows (more than `rows` when a padded decode step pads its output groups too).
  const size_t xb = std::max(static_cast<size_t>(rows) * std::max<int>(c.ffn_size, c.n_embd),
                             static_cast<size_t>(out) * C);
  if (half_ && std::max(rows, out) >= kTensorCoreRows && xb > s_.xb_capacity) {
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.xb, xb));
    s_.xb_capacity = xb;
    DropGraphs();
  }
  if (index_ints > s_.index_capacity) {
    MODRWKV_RETURN_IF_ERROR(Grow(&s_.index, static_cast<size_t>(index_ints)));
    s_.index_capacity = index_ints;
    DropGraphs();
    void* p = nullptr;
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, static_cast<size_t>(index_ints) * 4));
    host_index_.reset(static_cast<int32_t*>(p));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::StageDraws(absl::Span<const int> picked,
                                   absl::Span<const StepEntry> entries, int padded) {
  if (padded == 0) return absl::OkStatus();
  std::vector<DeviceDraw> draws(padded);  // padding rows: greedy, no edits
  std::vector<int32_t> offsets(padded + 1, 0);
  edits_.clear();
  for (int i = 0; i < padded; ++i) {
    if (i < static_cast<int>(picked.size())) {
      Sampler& sampler = *entries[picked[i]].sampler;
      if (sampler.IsPlainGreedy()) {
        draws[i].temperature = 0.0f;  // the argmax; nothing drawn from its random stream
      } else {
        draws[i] = sampler.PrepareDeviceDraw(&edits_);
      }
    } else {
      draws[i].temperature = 0.0f;
    }
    offsets[i + 1] = static_cast<int32_t>(edits_.size());
  }
  // One upload: draws (8-byte aligned) | offsets | edits.
  const size_t draw_bytes = padded * sizeof(DeviceDraw), offset_bytes = (padded + 1) * 4;
  const size_t bytes = draw_bytes + offset_bytes + edits_.size() * sizeof(LogitEdit);
  if (bytes > draw_capacity_) {
    // From 1 MiB, then 4x: every growth drops the captured graphs.
    const size_t cap = std::max({bytes, 4 * draw_capacity_, size_t{1} << 20});
    MODRWKV_ASSIGN_OR_RETURN(s_.draw, AllocDevice<uint8_t>(cap));
    void* p = nullptr;
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, cap));
    host_draw_.reset(static_cast<uint8_t*>(p));
    draw_capacity_ = cap;
    DropGraphs();
  }
  uint8_t* h = host_draw_.get();
  std::memcpy(h, draws.data(), draw_bytes);
  std::memcpy(h + draw_bytes, offsets.data(), offset_bytes);
  if (!edits_.empty()) {
    std::memcpy(h + draw_bytes + offset_bytes, edits_.data(), edits_.size() * sizeof(LogitEdit));
  }
  d_draws_ = reinterpret_cast<const DeviceDraw*>(s_.draw.get());
  d_edit_offsets_ = reinterpret_cast<const int32_t*>(s_.draw.get() + draw_bytes);
  d_edits_ = reinterpret_cast<const LogitEdit*>(s_.draw.get() + draw_bytes + offset_bytes);
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s_.draw.get(), h, bytes, cudaMemcpyHostToDevice, stream_.get()));
  return absl::OkStatus();
}

absl::Status CudaModel::Step(absl::Span<const StepEntry> entries,
                             std::vector<StepResult>* results) {
  if (!sticky_.ok()) return sticky_;
  absl::Status st = StepOnDevice(entries, results);
  if (!st.ok()) {
    // A sticky error surfaces at the next synchronisation, whichever call failed first.
    const cudaError_t err = cudaDeviceSynchronize();
    if (IsStickyCudaError(err)) sticky_ = CudaStatus(err, "the device (sticky error)");
  }
  return st;
}

int DecodeBucket(int n) {
  if (n <= 0) return 0;
  if (n <= 8) {
    int b = 1;
    while (b < n) b *= 2;
    return b;
  }
  const int step = n <= 64 ? 8 : n <= 512 ? 32 : 128;
  return (n + step - 1) / step * step;
}

absl::Status CudaModel::StepOnDevice(absl::Span<const StepEntry> entries,
                                     std::vector<StepResult>* results) {
  results->assign(entries.size(), StepResult{});
  if (entries.empty()) return absl::OkStatus();
  int R = 0;
  MODRWKV_RETURN_IF_ERROR(ValidateStepEntries(entries, info_.config, num_slots_, &R));
  MODRWKV_RETURN_IF_ERROR(UseDevice());
  const ModelConfig& cfg = info_.config;
  const int C = cfg.n_embd, V = cfg.vocab_size;
  const int E = static_cast<int>(entries.size());

  // Output groups, in this order in the output rows: the entries whose logits go to the host
  // (kLogits, and samplers that need them: a constraint), those whose token is picked on the
  // device (sample.cuh: greedy or drawn, with their logprobs), then hidden-state entries.
  std::vector<int> copied, picked, hidden;
  for (int e = 0; e < E; ++e) {
    const StepEntry& en = entries[e];
    if (en.output == StepOutput::kHidden) {
      hidden.push_back(e);
    } else if (en.output == StepOutput::kSample &&
               (en.sampler->IsPlainGreedy() || en.sampler->CanDrawOnDevice())) {
      picked.push_back(e);
    } else if (en.output != StepOutput::kNone) {
      copied.push_back(e);
    }
  }
  // A decode step (one row per sequence, no hidden rows) is padded to a bucket of sizes, and so
  // are its groups, so that steps of nearby sizes share one CUDA graph: padding sequences have
  // one row each and no slot (the slot kernels skip them); padding output rows read row 0 and
  // their results are dropped. Eager decode steps are padded alike, so a graph replays exactly
  // what an eager step computes.
  const bool decode = R == E && hidden.empty();
  StepShape sh;
  sh.entries = decode ? DecodeBucket(E) : E;
  sh.rows = R + (sh.entries - E);
  sh.copied =
      decode ? DecodeBucket(static_cast<int>(copied.size())) : static_cast<int>(copied.size());
  sh.picked =
      decode ? DecodeBucket(static_cast<int>(picked.size())) : static_cast<int>(picked.size());
  sh.logits = sh.copied + sh.picked;
  sh.out = sh.logits + static_cast<int>(hidden.size());
  MODRWKV_RETURN_IF_ERROR(StageDraws(picked, entries, sh.picked));
  // Index arrays, one upload: prev[R] | out_rows[out] | last[E] | slots[E] | offsets[E+1].
  const int Rp = sh.rows, Ep = sh.entries;
  const int index_ints = Rp + sh.out + 3 * Ep + 1;
  MODRWKV_RETURN_IF_ERROR(EnsureScratch(Rp, sh.out, index_ints));
  int32_t* prev = host_index_.get();
  int32_t* out_rows = prev + Rp;
  int32_t* last = out_rows + sh.out;
  int32_t* slots = last + Ep;
  int32_t* offsets = slots + Ep;

  // Gather the input rows (embedding table rows for tokens, given rows as they are).
  float* rows = host_rows_.get();
  int row = 0;
  for (int e = 0; e < E; ++e) {
    offsets[e] = row;
    slots[e] = entries[e].slot;
    for (const InputRowsView& seg : entries[e].inputs) {
      for (int32_t t : seg.tokens) {
        std::memcpy(rows + static_cast<int64_t>(row) * C, emb_.data() + static_cast<int64_t>(t) * C,
                    4 * static_cast<size_t>(C));
        prev[row] = row == offsets[e] ? -entries[e].slot - 1 : row - 1;
        ++row;
      }
      const int n = static_cast<int>(seg.embeddings.size() / C);
      if (n > 0) {
        std::memcpy(rows + static_cast<int64_t>(row) * C, seg.embeddings.data(),
                    seg.embeddings.size() * 4);
      }
      for (int j = 0; j < n; ++j, ++row)
        prev[row] = row == offsets[e] ? -entries[e].slot - 1 : row - 1;
    }
    last[e] = row - 1;
  }
  for (int e = E; e < Ep; ++e, ++row) {  // padding: its own predecessor, no slot
    std::memcpy(rows + static_cast<int64_t>(row) * C, emb_.data(), 4 * static_cast<size_t>(C));
    offsets[e] = row;
    prev[row] = row;
    slots[e] = -1;
    last[e] = row;
  }
  offsets[Ep] = row;
  // Output rows: each group's entries, then its padding (row 0).
  int o = 0;
  for (const auto& [group, size] : {std::pair{&copied, sh.copied}, std::pair{&picked, sh.picked},
                                    std::pair{&hidden, static_cast<int>(hidden.size())}}) {
    for (int i = 0; i < size; ++i) {
      out_rows[o++] = i < static_cast<int>(group->size()) ? last[(*group)[i]] : 0;
    }
  }

  cudaStream_t st = stream_.get();
  if (op_profile_) {  // the step's launches queue up behind a wait (set_op_profile)
    op_marks_ = 0;
    MODRWKV_RETURN_IF_ERROR(LaunchSpin(st, 20000));
  }
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(step_begin_.get(), st));
  Mark("upload");
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s_.x.get(), rows, static_cast<size_t>(Rp) * C * 4,
                                               cudaMemcpyHostToDevice, st));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s_.index.get(), host_index_.get(),
                                               static_cast<size_t>(index_ints) * 4,
                                               cudaMemcpyHostToDevice, st));
  MODRWKV_RETURN_IF_ERROR(RunForward(sh));
  // Back to the host: the logits that samplers need there, the tokens picked on the device, the
  // hidden rows.
  Mark("download");
  float* host_logits = host_out_.get();
  float* host_hidden = host_logits + static_cast<int64_t>(sh.copied) * V;
  if (!copied.empty()) {
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_logits, s_.logits.get(),
                                                 copied.size() * V * sizeof(float),
                                                 cudaMemcpyDeviceToHost, st));
  }
  const bool logprobs = std::any_of(picked.begin(), picked.end(), [&](int e) {
    return entries[e].sampler->params().logprobs_top_n >= 0;
  });
  if (!picked.empty()) {
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_tokens_.get(), s_.tokens.get(),
                                                 picked.size() * sizeof(int32_t),
                                                 cudaMemcpyDeviceToHost, st));
  }
  if (logprobs) {  // ~170 bytes a row instead of the logits
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_logprobs_.get(), s_.logprobs.get(),
                                                 picked.size() * sizeof(DeviceLogprobs),
                                                 cudaMemcpyDeviceToHost, st));
  }
  if (!hidden.empty()) {
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host_hidden, s_.xo.get() + static_cast<int64_t>(sh.logits) * C,
                        hidden.size() * C * sizeof(float), cudaMemcpyDeviceToHost, st));
  }
  Mark(nullptr);  // the end of the last operation
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(step_end_.get(), st));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  CollectOpProfile();
  float device_ms = 0;
  MODRWKV_CUDA_RETURN_IF_ERROR(
      cudaEventElapsedTime(&device_ms, step_begin_.get(), step_end_.get()));
  last_step_device_seconds_ = device_ms * 1e-3;
  for (size_t i = 0; i < hidden.size(); ++i) {
    (*results)[hidden[i]].hidden =
        absl::Span<const float>(host_hidden + static_cast<int64_t>(i) * C, C);
  }
  for (size_t i = 0; i < picked.size(); ++i) {
    StepResult& res = (*results)[picked[i]];
    res.token = host_tokens_[i];
    Sampler& sampler = *entries[picked[i]].sampler;
    sampler.Accept(res.token);  // as Sample() would have
    if (sampler.params().logprobs_top_n >= 0) {
      const DeviceLogprobs& lp = host_logprobs_[i];
      res.sample.logprob = lp.logprob;
      res.sample.top_logprobs.clear();
      for (int t = 0; t < lp.count; ++t)
        res.sample.top_logprobs.emplace_back(lp.ids[t], lp.values[t]);
    }
  }
  for (size_t i = 0; i < copied.size(); ++i) {
    (*results)[copied[i]].logits =
        absl::Span<const float>(host_logits + static_cast<int64_t>(i) * V, V);
  }
  // The samplers that need the logits run on the host (a whole vocabulary each); they belong to
  // distinct sequences, so in parallel.
  host_pool_->ParallelFor(static_cast<int64_t>(copied.size()), [&](int64_t i, int) {
    const int e = copied[i];
    if (entries[e].output != StepOutput::kSample) return;
    StepResult& res = (*results)[e];
    res.token = entries[e].sampler->Sample(
        absl::Span<float>(host_logits + i * static_cast<int64_t>(V), V), &res.sample);
  });
  return absl::OkStatus();
}

absl::Status CudaModel::Forward(const StepShape& sh) {
  const ModelConfig& cfg = info_.config;
  const int C = cfg.n_embd, V = cfg.vocab_size;
  const int R = sh.rows, E = sh.entries;
  cudaStream_t st = stream_.get();
  // The index arrays' layout: prev[R] | out_rows[out] | last[E] | slots[E] | offsets[E+1].
  const int32_t* d_prev = s_.index.get();
  const int32_t* d_out_rows = d_prev + R;
  const int32_t* d_last = d_out_rows + sh.out;
  const int32_t* d_slots = d_last + E;
  const int32_t* d_offsets = d_slots + E;
  auto layer_norm_cost = [&](int rows) { return OpCost{0, 8.0 * rows * C + 8.0 * C, 0}; };
  Mark("layer norm", layer_norm_cost(R));
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, s_.x.get(), nullptr, R, C, ln0_.get(), ln0_.get() + C,
                                          math::kLnEps, s_.x.get()));
  for (int li = 0; li < cfg.n_layer; ++li) {
    MODRWKV_RETURN_IF_ERROR(state_elem_bytes_ == 2
                                ? RunLayer<__half>(li, R, E, d_prev, d_last, d_slots, d_offsets)
                                : RunLayer<float>(li, R, E, d_prev, d_last, d_slots, d_offsets));
  }
  if (sh.out == 0) return absl::OkStatus();
  Mark("layer norm", layer_norm_cost(sh.out));
  MODRWKV_RETURN_IF_ERROR(LaunchLayerNorm(st, s_.x.get(), d_out_rows, sh.out, C, ln_out_.get(),
                                          ln_out_.get() + C, math::kLnEps, s_.xo.get()));
  if (sh.logits > 0) {
    MODRWKV_RETURN_IF_ERROR(Gemm(head_, s_.xo.get(), sh.logits, s_.logits.get(), false));
  }
  // One id per sequence picked on the device instead of its logits.
  if (sh.picked > 0) {
    Mark("pick tokens (sample.cu)", OpCost{0, 4.0 * sh.picked * V, 0});
    MODRWKV_RETURN_IF_ERROR(
        LaunchDrawRows(st, s_.logits.get() + static_cast<int64_t>(sh.copied) * V, sh.picked, V,
                       d_draws_, d_edit_offsets_, d_edits_, s_.tokens.get(), s_.logprobs.get()));
  }
  return absl::OkStatus();
}

absl::Status CudaModel::RunForward(const StepShape& sh) {
  // Graphs for decode steps only (one row per sequence): prefill chunks come in too many sizes.
  if (!graphs_enabled_ || op_profile_ || sh.rows != sh.entries || sh.out != sh.logits)
    return Forward(sh);
  const GraphKey key = std::make_tuple(sh.entries, sh.copied, sh.picked);
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    return CudaStatus(cudaGraphLaunch(it->second.get(), stream_.get()), "cudaGraphLaunch");
  }
  // The first step of a shape runs eagerly (it also warms cuBLAS up); the second is captured.
  if (graph_seen_.size() > 4096) graph_seen_.clear();
  if (++graph_seen_[key] < 2) return Forward(sh);
  if (graphs_.size() >= kMaxGraphs) graphs_.clear();
  cudaStream_t st = stream_.get();
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  const absl::Status captured = Forward(sh);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(st, &graph);
  cudaGraphExec_t exec = nullptr;
  cudaError_t made = cudaErrorUnknown;
  if (captured.ok() && ended == cudaSuccess) made = cudaGraphInstantiate(&exec, graph, 0);
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (!captured.ok() || ended != cudaSuccess || made != cudaSuccess) {
    // Not capturable here: run eagerly from now on (the step itself still runs).
    graphs_enabled_ = false;
    graphs_.clear();
    cudaGetLastError();  // clear a non-sticky capture error
    return Forward(sh);
  }
  graphs_[key].reset(exec);
  return CudaStatus(cudaGraphLaunch(exec, st), "cudaGraphLaunch");
}

void CudaModel::Mark(const char* op, const OpCost& cost) {
  if (!op_profile_ || !op_error_.ok()) return;
  if (op_marks_ == op_events_.size()) {
    absl::StatusOr<CudaEvent> e = CreateEvent(cudaEventDefault);
    if (!e.ok()) {
      op_error_ = e.status();
      return;
    }
    op_events_.push_back(*std::move(e));
    op_names_.emplace_back();
  }
  if (cudaError_t e = cudaEventRecord(op_events_[op_marks_].get(), stream_.get());
      e != cudaSuccess) {
    op_error_ = CudaStatus(e, "op profile event");
    return;
  }
  op_names_[op_marks_++] = {op, cost};
}

void CudaModel::CollectOpProfile() {
  if (!op_profile_ || !op_error_.ok()) return;
  for (size_t i = 0; i + 1 < op_marks_; ++i) {
    float ms = 0;
    if (cudaError_t e = cudaEventElapsedTime(&ms, op_events_[i].get(), op_events_[i + 1].get());
        e != cudaSuccess) {
      op_error_ = CudaStatus(e, "op profile event");
      return;
    }
    const char* op = op_names_[i].first;  // not a structured binding: clang 14 cannot capture one
    auto it = std::find_if(op_times_.begin(), op_times_.end(),
                           [&](const OpTime& t) { return t.op == op; });
    if (it == op_times_.end()) it = op_times_.insert(op_times_.end(), OpTime{op, 0, {}});
    it->seconds += ms * 1e-3;
    it->cost += op_names_[i].second;
  }
  op_marks_ = 0;
}

absl::StatusOr<std::vector<CudaModel::OpTime>> CudaModel::TakeOpProfile() {
  if (!op_error_.ok()) return std::exchange(op_error_, absl::OkStatus());
  return std::exchange(op_times_, {});
}

}  // namespace modrwkv::cuda
