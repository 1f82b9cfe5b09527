// Building blocks shared by the ViT towers (encoders/vision) and the speech encoders
// (encoders/speech): row-parallel bias, LayerNorm and activations, multi-head self-attention on
// the CPU backend's panel GEMM, and the pre-LN transformer encoder layer (transformers'
// SiglipEncoderLayer / CLIPEncoderLayer / WhisperEncoderLayer).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// Runs fn(r0, r1, thread) over [0, rows) in chunks of 16 rows.
template <typename Fn>
void ForRows(cpu::ThreadPool* pool, int rows, Fn&& fn) {
  constexpr int kRowsPerTask = 16;
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  pool->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int r0 = static_cast<int>(t) * kRowsPerTask;
    fn(r0, std::min(rows, r0 + kRowsPerTask), thread);
  });
}

// y[r][i] += bias[i] over rows x n.
void AddBias(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool);
// y[r][i] = bias[i] over rows x n.
void SetRows(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool);
// Row-wise LayerNorm of [rows][n]; y may be x.
void LayerNormRows(const float* x, float* y, int rows, int n, const std::vector<float>& w,
                   const std::vector<float>& b, float eps, cpu::ThreadPool* pool);

// transformers' ACT2FN entries used by the encoders.
enum class Activation {
  kGeluErf,   // "gelu": 0.5 x (1 + erf(x / sqrt 2))
  kGeluTanh,  // "gelu_new", "gelu_pytorch_tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  kQuickGelu  // "quick_gelu": x * sigmoid(1.702 x)
};
// nullopt for any other name.
std::optional<Activation> ActivationByName(std::string_view name);
// In place over one row of n floats; tmp holds n floats.
void ApplyActivation(Activation act, float* x, int n, float* tmp);
// In place over [rows][n]; scratch holds scratch_per_thread floats per pool thread, >= n.
void ActivationRows(Activation act, float* x, int rows, int n, float* scratch,
                    int64_t scratch_per_thread, cpu::ThreadPool* pool);

// softmax(scale * s) of one row in place, with max subtraction, in fp32; scale > 0.
void ScaledSoftmax(float* s, int n, float scale);

// Shape of a pre-LN transformer encoder layer over sequences of `tokens` rows.
struct EncoderLayerShape {
  int tokens = 0;  // rows per sequence
  int dim = 0;     // hidden width D
  int ffn = 0;     // MLP width F
  int heads = 0;
  float eps = 1e-5f;  // LayerNorm epsilon
  Activation act = Activation::kGeluErf;
  bool causal = false;  // SelfAttention: each row attends only to itself and the rows before it

  int head_dim() const { return dim / heads; }
  // Multiply-adds x 2 of one sequence through the layer (projections and attention products).
  double Flops() const;
};

// Weights of one pre-LN encoder layer:
//   x += out(attention(LN1(x)));  x += fc2(act(fc1(LN2(x)))).
struct EncoderLayerWeights {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [D]
  cpu::Matrix qkv;                                // [3D, D]: q, k, v projections stacked
  std::vector<float> qkv_b;                       // [3D] (zeros where a projection has no bias)
  cpu::Matrix out;                                // [D, D]
  std::vector<float> out_b;                       // [D]
  cpu::Matrix fc1;                                // [F, D]
  std::vector<float> fc1_b;                       // [F]
  cpu::Matrix fc2;                                // [D, F]
  std::vector<float> fc2_b;                       // [D]
};

// Floats of per-thread scratch a layer needs: one block of q query rows (q = min(t, 96)), its
// scores [q][t] and packed rows q * max(t, head_dim); or the activation's temporary [F].
int64_t LayerScratchPerThread(const EncoderLayerShape& s);

// Scratch of one forward call over `rows` = batch * tokens rows. Owned by the call, so that
// several threads may run forward passes at once.
struct EncoderScratch {
  EncoderScratch(const EncoderLayerShape& s, int rows, int threads);
  int64_t per_thread = 0;
  cpu::AlignedBuffer<float> h;       // [rows][D]: LayerNorm outputs
  cpu::AlignedBuffer<float> qkv;     // [rows][3D]
  cpu::AlignedBuffer<float> attn;    // [rows][D]
  cpu::AlignedBuffer<float> mlp;     // [rows][F]
  cpu::AlignedBuffer<float> scores;  // [threads][per_thread]
};

// Multi-head self-attention: softmax(Q K^T * head_dim^-0.5) V in fp32, without a mask, or with
// s.causal over each row and the rows before it (the later scores are zeroed after the softmax).
// qkv: [batch * tokens][3D] (q | k | v per row); out: [batch * tokens][D]. K and V^T of each
// (sequence, head) are packed once as if they were weights, then one pool task per (sequence,
// head, block of 96 query rows) runs both products on the engine's panel GEMM. scores:
// per_thread floats per pool thread (LayerScratchPerThread).
void SelfAttention(const EncoderLayerShape& s, int batch, const float* qkv, float* out,
                   float* scores, int64_t per_thread, cpu::ThreadPool* pool);

// One pre-LN layer over x: [batch * tokens][D], in place. All sequences go through each
// projection together.
void RunPreLnLayer(const EncoderLayerWeights& l, const EncoderLayerShape& s, int batch, float* x,
                   EncoderScratch* scratch, cpu::ThreadPool* pool, cpu::LinearRunner* lin);

// A tower's stack of pre-LN layers run somewhere other than this CPU (a GPU: encoders/cuda), in
// place of RunPreLnLayer's loop; the rest of the tower's forward pass stays on the CPU.
// Thread-safe: encoder workers call Run concurrently.
class LayerStackRunner {
 public:
  virtual ~LayerStackRunner() = default;
  // x: [batch * tokens][dim] host rows, in place, through every layer the runner was built with.
  virtual absl::Status Run(float* x, int batch) const = 0;
};

// Builds a runner for `layers` (in order) of `shape`; an error when they cannot be placed (no
// device, out of memory).
using LayerStackFactory = std::function<absl::StatusOr<std::unique_ptr<LayerStackRunner>>(
    absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape)>;

}  // namespace modrwkv::encoders
