// The CPU backend: RWKV7 forward pass over a batch of sequences, state pool in host memory.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"
#include "engine/model/model.h"
#include "engine/model/rwkv7_weights.h"

namespace modrwkv::cpu {

class CpuModel final : public Model {
 public:
  // Copies (and converts/transposes) the weights out of `tensors`, which need not outlive it.
  static absl::StatusOr<std::unique_ptr<CpuModel>> Create(
      const std::map<std::string, TensorView>& tensors, const ModelOptions& options);

  const ModelDescription& info() const override { return info_; }
  int num_slots() const override { return num_slots_; }
  absl::Status Step(absl::Span<const StepEntry> entries, std::vector<StepResult>* results) override;
  absl::Status ResetSlot(int slot) override;
  absl::Status CopySlot(int src, int dst) override;
  absl::Status ReadSlot(int slot, absl::Span<float> out) const override;
  absl::Status WriteSlot(int slot, absl::Span<const float> in) override;
  ModelCounters counters() const override;

  int threads() const { return pool_->size(); }

 private:
  struct Layer {
    // [C] f32 vectors
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
    std::vector<float> x_r, x_w, x_k, x_v, x_a, x_g, w0, a0, v0, k_k, k_a, r_k;
    std::vector<float> lnx_w, lnx_b, ffn_x_k;
    // [out, in]
    Matrix w1, w2, a1, a2, v1, v2, g1, g2;  // LoRA: x1 [D, C], x2 [C, D]
    Matrix wr, wk, wv, wo;                  // [C, C]
    Matrix ffn_key, ffn_value;              // [F, C], [C, F]
    // With ModelOptions::sparse_ffn, the value matrix again, input-major: decode steps of up to
    // kSparseMaxRows rows read only the rows of their nonzero activations (linear.h); the
    // packed one serves the steps of more rows.
    Matrix ffn_value_rows;
  };

  // Per-step scratch, grown to the largest step seen. Row-major [rows][width].
  struct Scratch {
    int rows = 0;
    AlignedBuffer<float> x, xn, xr, xw, xk, xv, xa, xg, r, k, v, w, a, g, kk, y, vfirst, vgate;
    AlignedBuffer<float> hw, ha, hv, hg, hf;
    AlignedBuffer<float> xo, logits;
  };

  CpuModel(const ModelOptions& options, std::unique_ptr<ThreadPool> pool);
  absl::Status LoadWeights(const Rwkv7Refs& refs, WType wt, bool sparse_ffn);
  // `out_rows` rows of ln_out (logits and hidden-state entries), `logit_rows` of logits.
  void EnsureScratch(int rows, int out_rows, int logit_rows);
  void Embed(absl::Span<const StepEntry> entries);
  void RunLayer(int layer, absl::Span<const StepEntry> entries);
  float* SlotState(int slot, int layer) {
    return state_.data() + static_cast<int64_t>(slot) * info_.config.StateFloats() +
           static_cast<int64_t>(layer) * info_.config.StateFloatsPerLayer();
  }
  absl::Status CheckSlot(int slot, const char* what) const;

  ModelDescription info_;
  int num_slots_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  LinearRunner linear_;

  Matrix emb_;  // [V, C] row table
  std::vector<float> ln0_w_, ln0_b_, ln_out_w_, ln_out_b_;
  Matrix head_;  // [V, C]
  std::vector<Layer> layers_;

  AlignedBuffer<float> state_;  // [slots][L][att_shift C | wkv H*64*64 | ffn_shift C]

  // Row layout of the current step.
  std::vector<int> entry_offset_;  // first row of each entry
  std::vector<int> entry_rows_;
  int step_rows_ = 0;
  Scratch s_;
};

}  // namespace modrwkv::cpu
