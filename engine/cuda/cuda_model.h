// The CUDA backend: RWKV7 on one GPU behind the Model interface (engine/model/model.h).
//
// Weights live on the device as fp32 (bf16 checkpoints are widened once, at load) or, with
// --dtype bf16 / f16, in 16 bits. Every projection of a step is one product over all the step's
// rows (decode tokens and prefill chunks of every sequence together): a cuBLAS SGEMM for fp32,
// for 16-bit weights the kernel of gemv_half.cuh below 16 rows and cuBLAS on tensor cores from
// 16 rows; the element-wise ops are the kernels of
// rwkv7_ops.cuh plus the recurrence of wkv.cuh. The state pool is one cudaMalloc at load, in the
// CPU backend's slot layout, so ReadSlot/WriteSlot move the canonical state blob as it is. The
// embedding table stays in host memory: the rows of a step's tokens are gathered on the host and
// copied up with the step's other inputs. A sequence's token is picked on the device (sample.cuh)
// unless its sampler needs the logits on the host (a constraint), its logprobs with it. Decode
// steps are padded to bucket sizes and replayed as CUDA graphs.
//
// The state pool holds f32 or, as an option, f16 elements (half the memory per session; exported
// blobs are f32 either way). Slot operations are queued on the model's stream, behind the work
// that wrote the slot and ahead of the work that follows: a copy, reset or offload to the cold
// tier does not make the host wait (a read does).
//
// Not built yet (docs/engine.md, "CUDA backend"): a pipelined (asynchronous) Step.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/pinned_states.h"
#include "engine/cuda/sparse_rows.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/model/model.h"
#include "engine/model/rwkv7_weights.h"

namespace modrwkv::cpu {
class ThreadPool;
}  // namespace modrwkv::cpu

namespace modrwkv::cuda {

// The padded size of a decode step or of one of its output groups (CUDA graphs are kept per
// padded shape): 1, 2, 4, 8, then multiples of 8 to 64, of 32 to 512, of 128 beyond; 0 stays 0.
int DecodeBucket(int n);

// What an operation must move through device memory and compute, counted from the shapes:
// weights read; every byte read or written (weights, activations, slot states, the launch
// parameters' vectors; host transfers count nothing); products' FLOPs (2 per multiply-add).
// Bytes at the copy bandwidth and FLOPs at the GEMM rate are the operation's lower bound
// (caches aside: what a kernel reads again from L2 is not counted twice). The sparse value
// product counts its whole matrix: it reads less.
struct OpCost {
  double weight_bytes = 0, bytes = 0, flops = 0;
  OpCost& operator+=(const OpCost& o) {
    weight_bytes += o.weight_bytes;
    bytes += o.bytes;
    flops += o.flops;
    return *this;
  }
};

class CudaModel final : public Model {
 public:
  // Builds the model on device `device` (0-based). FAILED_PRECONDITION without such a device;
  // RESOURCE_EXHAUSTED when the weights or the state pool do not fit.
  static absl::StatusOr<std::unique_ptr<CudaModel>> Create(
      const std::map<std::string, TensorView>& tensors, const ModelOptions& options, int device);
  ~CudaModel() override;

  const ModelDescription& info() const override { return info_; }
  int num_slots() const override { return num_slots_; }
  absl::Status Step(absl::Span<const StepEntry> entries, std::vector<StepResult>* results) override;
  absl::Status ResetSlot(int slot) override;
  absl::Status CopySlot(int src, int dst) override;
  absl::Status ReadSlot(int slot, absl::Span<float> out) const override;
  absl::Status WriteSlot(int slot, absl::Span<const float> in) override;
  // To and from pinned host memory (pinned_states.h), queued on the stream, not waited for; an
  // offload falls back to ReadSlot's pageable copy when no memory can be pinned, and a restore
  // of another backend's ColdState goes through WriteSlot.
  absl::StatusOr<std::unique_ptr<ColdState>> OffloadSlot(int slot) override;
  absl::Status RestoreSlot(int slot, ColdState& cold) override;
  absl::Status Health() const override { return sticky_; }

  // The decode-step CUDA graphs held now (ModelOptions::cuda_graphs).
  size_t graph_count() const { return graphs_.size(); }
  // The device's part of the last Step: from its inputs' upload to its results' download (CUDA
  // events); the rest of the step's wall time is host work (staging, sampling on the host).
  double last_step_device_seconds() const { return last_step_device_seconds_; }

  // Where a step's device time goes, operation by operation (cuda_bench --breakdown). While on,
  // steps run eagerly (no graphs) behind a short device-side wait, so that their launches queue
  // up and the events between them time each operation on the device, not the host's launch
  // rate. TakeOpProfile returns each operation's time and what it moved and computed (OpCost),
  // summed over layers and steps since the last call, in the order first seen, and starts over.
  struct OpTime {
    std::string op;
    double seconds = 0;
    OpCost cost;
  };
  void set_op_profile(bool on) { op_profile_ = on; }
  absl::StatusOr<std::vector<OpTime>> TakeOpProfile();

 private:
  // A matrix in the Linear convention [out][in], row-major: fp32, or 16-bit bits (--dtype bf16 or
  // f16: CudaModel::half_). Input-major ([in][out]) for the channel mix's value matrix with
  // 16-bit weights and ModelOptions::sparse_ffn: few-row products then read only the rows of
  // nonzero inputs (sparse_rows.cuh); cuBLAS reads it untransposed.
  struct Matrix {
    DeviceBuffer<float> data;
    DeviceBuffer<uint16_t> half;
    int out = 0, in = 0;
    bool input_major = false;
    const char* op = "product";  // its name in the op profile
  };
  struct Layer {
    // Small vectors, one buffer: see the offsets in cuda_model.cc (kVec*).
    DeviceBuffer<float> vec;
    Matrix w1, w2, a1, a2, v1, v2, g1, g2, wr, wk, wv, wo, ffn_key, ffn_value;
  };
  // Per-step device scratch, grown to the largest step seen.
  struct Scratch {
    int rows = 0, out_rows = 0;
    DeviceBuffer<float> x, xn, mix, r, k, v, w, a, g, kk, y, v_first, v_gate;
    DeviceBuffer<float> hw, ha, hv, hg, hf;
    DeviceBuffer<float> xo, logits;
    DeviceBuffer<uint16_t> xb;  // a product's input rounded to 16 bits (tensor-core products)
    // With 16-bit weights, the inputs of a layer's tensor-core products as their producers write
    // them (ActivationsOut): the mixes, the activated LoRA hiddens, y, relu²(ffn key).
    DeviceBuffer<uint16_t> mix_h, hw_h, hg_h, y_h, hf_h;
    size_t xb_capacity = 0;                 // elements
    DeviceBuffer<int32_t> tokens;           // the tokens picked on the device (drawn, then greedy)
    DeviceBuffer<DeviceLogprobs> logprobs;  // theirs, for samplers that report logprobs
    DeviceBuffer<uint8_t> draw;             // the draws' upload (StageDraws)
    DeviceBuffer<int32_t> index;  // prev[R] | out_rows[n_out] | last[E] | slots[E] | offsets[E+1]
    int index_capacity = 0;
  };

  CudaModel() = default;
  absl::Status Init(const Rwkv7Refs& refs, const ModelOptions& options, int device);
  absl::StatusOr<Matrix> Upload(const WeightRef& ref, bool input_major = false);
  absl::Status CheckSlot(int slot, const char* what) const;
  absl::Status UseDevice() const;  // makes device_ current on the calling thread
  absl::Status StepOnDevice(absl::Span<const StepEntry> entries, std::vector<StepResult>* results);
  // What a step computes, as far as the kernels' launches depend on it (padding included):
  // `rows` input rows of `entries` sequences; `out` output rows, of which the first `logits` get
  // the LM head: `copied` for the host, then `picked` on the device (sample.cuh); the rest hidden.
  struct StepShape {
    int rows = 0, entries = 0, out = 0, copied = 0, picked = 0, logits = 0;
  };
  // The device work of a step, from ln0 to the tokens picked on the device, enqueued on the stream
  // with the step's inputs already staged: eagerly, or as a CUDA graph (RunForward).
  absl::Status Forward(const StepShape& shape);
  // Forward, replayed from a CUDA graph for decode steps whose shape was seen before (launching
  // ~13 kernels per layer one by one costs more than a small batch's arithmetic). The graphs hold
  // the scratch buffers' addresses, so growing any of them drops the graphs (DropGraphs).
  absl::Status RunForward(const StepShape& shape);
  void DropGraphs() { graphs_.clear(); }
  // Device scratch for `rows` input rows and `out_rows` output rows, `index_ints` index entries,
  // and the pinned host staging that goes with them.
  absl::Status EnsureScratch(int rows, int out_rows, int index_ints);
  // For the entries `picked` (indices into `entries`) whose token is picked on the device: their
  // draws (greedy, or Sampler::PrepareDeviceDraw's edits and draw), then greedy padding up to
  // `padded` rows, copied up on the stream.
  absl::Status StageDraws(absl::Span<const int> picked, absl::Span<const StepEntry> entries,
                          int padded);
  // out[rows][m.out] = in[rows][m.in] * m^T (+ out when accumulate). in_half: a tensor-core
  // product's input already rounded to 16 bits (then `in` is not read). out_half: a tensor-core
  // product of bf16 weights stores its result there, rounded to bf16, instead of in `out` (not
  // with accumulate).
  absl::Status Gemm(const Matrix& m, const float* in, int rows, float* out, bool accumulate,
                    const uint16_t* in_half = nullptr, uint16_t* out_half = nullptr);
  // Independent products over the same rows, each with what its store applies (an activation,
  // accumulation): one launch of the few-row kernel for all of them (16-bit weights, fewer than
  // kTensorCoreRows rows; `op` names it in the op profile), else one Gemm each and the activation
  // after it.
  struct Product {
    const Matrix* m;
    const float* in;
    float* out;
    GemvEpilogue epilogue = GemvEpilogue::kStore;
    // Tensor-core products (16-bit weights, kTensorCoreRows rows or more): the input already
    // rounded by its producer (no conversion), and where an activation epilogue stores its
    // output rounded instead of in f32 `out` (the next product's input). With bf16 weights and
    // ModelOptions::cuda_bf16_activation_rows, cuBLAS writes such a product's result there in
    // bf16 and the activation runs on it in place: no f32 rows written and read back. Not with
    // fp16 weights, where
    // a pre-activation beyond fp16's range would become infinite before the activation (relu²'s
    // result is saturated instead).
    const uint16_t* in_half = nullptr;
    uint16_t* out_half = nullptr;
  };
  absl::Status Products(absl::Span<const Product> products, int rows, const char* op = nullptr);
  // S: the state pool's element type (float, or __half with ModelOptions::StateType::kF16).
  template <typename S>
  absl::Status RunLayer(int li, int R, int E, const int32_t* prev, const int32_t* last,
                        const int32_t* slots, const int32_t* offsets);
  template <typename S>
  S* SlotBase(int layer) const {
    return reinterpret_cast<S*>(state_.get()) + static_cast<int64_t>(layer) * layer_floats_;
  }
  int64_t SlotBytes() const { return info_.config.StateFloats() * state_elem_bytes_; }

  ModelDescription info_;
  int device_ = 0;
  // Matrices in 16 bits of this type (ModelOptions::WeightType::kBF16 or kF16), else f32.
  std::optional<HalfType> half_;
  absl::Status sticky_;  // a sticky CUDA error, once one happened (Health)
  int num_slots_ = 0;
  int64_t layer_floats_ = 0;  // per slot and layer: att shift C | wkv H*64*64 | ffn shift C
  int state_elem_bytes_ = 4;  // 4: f32 states; 2: f16 (ModelOptions::StateType::kF16)
  CudaStream stream_;
  CudaEvent step_begin_, step_end_;  // timing events around a step's device work
  double last_step_device_seconds_ = 0;
  // The op profile (set_op_profile): an event where each operation starts, its name and cost;
  // op_marks_ of them recorded in this step.
  void Mark(const char* op, const OpCost& cost = {});
  // The cost of a product of `rows` rows by m (its input 16-bit when `half_input`, else f32,
  // converted here when the product runs on tensor cores; its output f32, also read when
  // `accumulate`, or 16-bit when `half_output`).
  OpCost ProductCost(const Matrix& m, int rows, bool half_input, bool accumulate,
                     bool half_output = false) const;
  void CollectOpProfile();  // after the step's synchronization
  bool op_profile_ = false;
  std::vector<CudaEvent> op_events_;
  std::vector<std::pair<const char*, OpCost>> op_names_;
  size_t op_marks_ = 0;
  absl::Status op_error_;
  std::vector<OpTime> op_times_;
  const CublasApi* blas_ = nullptr;  // opened at run time (cublas_api.h)
  cublasHandle_t cublas_ = nullptr;
  std::vector<float> emb_;            // [V][C], host memory
  DeviceBuffer<float> ln0_, ln_out_;  // weight | bias, [2][C] each
  Matrix head_;
  std::vector<Layer> layers_;
  DeviceBuffer<uint8_t> state_;                 // [slots][L][layer_floats_] elements of f32 or f16
  std::shared_ptr<PinnedStates> pinned_;        // the cold tier's buffers (shared with ColdStates)
  std::unique_ptr<cpu::ThreadPool> host_pool_;  // runs the step's samplers (ModelOptions::threads)
  Scratch s_;
  SparseRowsScratch sparse_;  // the sparse value products' meeting place (sparse_rows.cuh)
  DeviceBuffer<float> sparse_partial_;
  DeviceBuffer<unsigned> sparse_tickets_;
  // Pinned host staging: the step's input rows and index arrays going up, logits and hidden
  // rows coming down (sized with the device scratch).
  struct PinnedFree {
    void operator()(void* p) const noexcept {
      if (p != nullptr) cudaFreeHost(p);
    }
  };
  std::unique_ptr<float[], PinnedFree> host_rows_, host_out_;
  std::unique_ptr<int32_t[], PinnedFree> host_index_, host_tokens_;
  std::unique_ptr<DeviceLogprobs[], PinnedFree> host_logprobs_;
  // Sampling on the device (StageDraws): the step's edits, their pinned staging and where the
  // upload's parts are on the device.
  std::vector<LogitEdit> edits_;
  std::unique_ptr<uint8_t[], PinnedFree> host_draw_;
  size_t draw_capacity_ = 0;
  const DeviceDraw* d_draws_ = nullptr;
  const int32_t* d_edit_offsets_ = nullptr;
  const LogitEdit* d_edits_ = nullptr;
  // CUDA graphs of decode steps, by padded (entries, copied, picked); ModelOptions::cuda_graphs.
  struct GraphExecDeleter {
    void operator()(cudaGraphExec_t g) const noexcept {
      if (g != nullptr) cudaGraphExecDestroy(g);
    }
  };
  using GraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;
  using GraphKey = std::tuple<int, int, int>;
  static constexpr size_t kMaxGraphs = 64;
  bool graphs_enabled_ = false;
  WkvForm wkv_form_ = WkvForm::kAuto;  // ModelOptions::cuda_chunked_wkv
  bool sparse_ffn_ = false;            // ModelOptions::sparse_ffn, with 16-bit weights
  // ModelOptions::cuda_fused_lora_up, with 16-bit weights and LoRA dims the kernel takes.
  bool fused_lora_up_ = false;
  bool fused_prefill_ = true;          // ModelOptions::cuda_fused_prefill
  bool bf16_activation_rows_ = false;  // ModelOptions::cuda_bf16_activation_rows
  std::map<GraphKey, GraphExec> graphs_;
  std::map<GraphKey, int> graph_seen_;
  DeviceBuffer<uint8_t> cublas_workspace_;  // fixed, so that captured products stay valid
};

}  // namespace modrwkv::cuda
