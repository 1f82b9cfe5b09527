// The backend interface every model implementation (CPU now, CUDA next) sits behind.
//
// A backend owns the weights and a pool of recurrent-state slots in its own memory (host memory
// for the CPU, device memory for a GPU). One Step() runs any mix of sequences: single decode tokens
// and prefill chunks of different sequences, each naming the slot that holds its state. Nothing is
// copied in or out of the slots per step; slots are read or written as blobs only on request
// (session export/import, cold-tier offload).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/cold_state.h"
#include "engine/model/model_config.h"
#include "engine/sampling/sampler.h"

namespace modrwkv {

// A run of input rows for one sequence: either token ids or precomputed embedding rows (for
// example image features from an encoder's adapter). Embedding rows take the place of
// emb[token] and go through ln0 like token rows do. Exactly one of the two spans is non-empty.
struct InputRowsView {
  absl::Span<const int32_t> tokens;
  absl::Span<const float> embeddings;  // [rows, n_embd] row-major

  static InputRowsView Tokens(absl::Span<const int32_t> t) { return {t, {}}; }
  static InputRowsView Embeddings(absl::Span<const float> e) { return {{}, e}; }
};

enum class StepOutput {
  kNone,    // advance the state only (a prefill chunk that is not the last)
  kLogits,  // return the logits after the last row
  kSample,  // sample the next token from the logits after the last row (inside the backend)
  kHidden,  // return the last row's hidden state after ln_out ([n_embd]), for a task head that
            // replaces the LM head (time-series forecasting); no logits are computed
};

// One sequence's work in a step. The spans must stay valid until Step returns.
struct StepEntry {
  int slot = -1;
  std::vector<InputRowsView> inputs;  // in order; at least one row in total
  StepOutput output = StepOutput::kNone;
  Sampler* sampler = nullptr;  // required for kSample; the backend calls sampler->Sample()
};

struct StepResult {
  // kLogits and kSample: the logits of the last row ([vocab_size]); for kSample they are the
  // sampler's working copy (penalties applied), or empty when the backend picked the token where
  // the logits are (on a GPU every sampler that Sampler::CanDrawOnDevice: engine/sampling/
  // device_draw.h). Valid until the next Step or slot operation.
  absl::Span<const float> logits;
  int32_t token = -1;   // kSample
  SampleResult sample;  // kSample: logprobs if the sampler was asked for them
  // kHidden: LayerNorm_out(x) of the last row ([n_embd]), the vector the LM head would multiply.
  // Valid until the next Step or slot operation.
  absl::Span<const float> hidden;
};

struct ModelDescription {
  ModelConfig config;
  std::string backend;              // "cpu", "cuda"
  std::string weight_dtype;         // "f32", "bf16", "f16" (CUDA)
  std::string state_dtype = "f32";  // the state pool's element type: "f32", or "f16" (CUDA)
  int64_t parameter_count = 0;
  int64_t weight_bytes = 0;            // bytes of weights held by the backend
  int64_t decode_bytes_per_token = 0;  // weight bytes one decode token must read (roofline)
  uint64_t fingerprint = 0;  // identifies the weights (FingerprintRwkv7); guards state import
};

// What a backend has counted since it was built (read on the thread that steps it).
struct ModelCounters {
  // The channel mix's value products that could skip zero relu^2 activations
  // (ModelOptions::sparse_ffn: decode steps of few rows): their inputs, and how many of those
  // had their weights read (nonzero in some row of the step). read / inputs is the fraction of
  // those products' value weights a step read: ~0.5 with random weights, less with trained ones.
  int64_t sparse_ffn_inputs = 0;
  int64_t sparse_ffn_inputs_read = 0;
};

class Model {
 public:
  virtual ~Model() = default;

  virtual const ModelDescription& info() const = 0;
  const ModelConfig& config() const { return info().config; }
  virtual int num_slots() const = 0;

  // Runs one batched step. Entries must name distinct, valid slots. `results` gets one element
  // per entry, in order. Only the scheduler thread calls this (not thread-safe).
  virtual absl::Status Step(absl::Span<const StepEntry> entries,
                            std::vector<StepResult>* results) = 0;

  // Slot operations. A fresh or reset slot holds the zero state.
  virtual absl::Status ResetSlot(int slot) = 0;
  virtual absl::Status CopySlot(int src, int dst) = 0;
  // The canonical host layout of one sequence's state, StateBytes() bytes: per layer, f32
  // att_shift[C], wkv[H][64 value][64 key], ffn_shift[C] (the official package's state order).
  int64_t StateBytes() const { return config().StateBytes(); }
  virtual absl::Status ReadSlot(int slot, absl::Span<float> out) const = 0;
  virtual absl::Status WriteSlot(int slot, absl::Span<const float> in) = 0;
  // The cold tier's two moves. OffloadSlot copies a slot's state out to host memory of the
  // backend's choosing; the slot may be reused (reset, written, stepped) right after it returns,
  // and the copy keeps the state as it was. RestoreSlot puts such a state (or any ColdState) into
  // a slot; `cold` may be dropped or reused right after it returns. A backend may leave either
  // copy in flight (a GPU's stays queued behind the slot's earlier work and ahead of its later
  // work), so neither waits for the device. The defaults go through ReadSlot / WriteSlot.
  virtual absl::StatusOr<std::unique_ptr<ColdState>> OffloadSlot(int slot);
  virtual absl::Status RestoreSlot(int slot, ColdState& cold);

  // OK while the backend can run steps. After an error it cannot recover from (a GPU whose
  // context is lost to a sticky CUDA error), that error, for good: the scheduler then ends every
  // request and refuses new ones, and the server turns readiness off. The CPU backend has none.
  virtual absl::Status Health() const { return absl::OkStatus(); }
  // Counters since the model was built; zeros for what a backend does not count (the CUDA
  // backend's sparse product finds its nonzero inputs on the device and counts nothing).
  virtual ModelCounters counters() const { return {}; }
};

// A Step error that concerns one entry only and left every slot untouched (the backend checks
// entries before it computes anything): the scheduler fails that entry's request alone and runs
// the others again. An error without this tag means the step's slots are in an unknown state.
absl::Status WithStepEntry(absl::Status s, int entry);
std::optional<int> StepEntryOf(const absl::Status& s);  // nullopt when untagged

// Checks a step's entries as every backend must before it computes anything: distinct, valid
// slots; token ids inside the vocabulary; embedding segments of whole rows; at least one row per
// entry; a sampler where one is asked for; at most 2^20 rows in all. An error names the entry
// (WithStepEntry). On success *total_rows is the step's row count.
absl::Status ValidateStepEntries(absl::Span<const StepEntry> entries, const ModelConfig& config,
                                 int num_slots, int* total_rows);
// OUT_OF_RANGE "<what> slot N out of range [0, num_slots)" unless 0 <= slot < num_slots.
absl::Status CheckSlotIndex(int slot, int num_slots, const char* what);
// INVALID_ARGUMENT "state buffer has N floats, expected M" unless size == the state's floats
// (ReadSlot / WriteSlot).
absl::Status CheckStateBuffer(size_t size, const ModelConfig& config);
// The input rows of one entry.
int64_t EntryRows(const StepEntry& entry, int n_embd);

// What to build from a checkpoint.
struct ModelOptions {
  // Matrices are kept in this type; small vectors are always f32 and all arithmetic is f32.
  // kI8: int8 with a scale per output row (a quarter of f32's bytes; the embedding table stays
  // bf16). kI4 (the CPU backend only): the time mix's r, k, v, o and the channel mix's key and
  // value in int4 with a bf16 scale per output row and group of 32 inputs (4.5 bits per weight),
  // multiplied by activations rounded to int8 per group of 32; the LoRA matrices and the head in
  // int8, the embedding table bf16; sparse channel-mix values skip the inputs rounded to zero.
  // Their accuracy costs against f32
  // are measured in docs/benchmarks.md. kF16 (the CUDA backend only): fp16 matrices, three more
  // mantissa bits than bf16 at the same bytes (what the official RWKV-7 GPU inference runs); a
  // matrix with a value beyond fp16's range is refused.
  enum class WeightType { kAuto, kF32, kBF16, kI8, kF16, kI4 };
  WeightType weight_type =
      WeightType::kAuto;  // kAuto: bf16 if the checkpoint is bf16/f16, else f32
  int num_slots = 1;
  // > 0: allocate as many slots as this many bytes of state hold (at least num_slots); the state
  // pool is allocated once, at load.
  int64_t state_memory_bytes = 0;
  // The state pool's element type. kF16 (the CUDA backend only) halves a session's memory: the
  // kernels read and write the slots as f16 and compute in f32, so a state is rounded to f16
  // once per step (its accuracy cost is measured in docs/benchmarks.md). Exported state blobs are
  // f32 either way, so sessions move between pools of either type.
  enum class StateType { kF32, kF16 };
  StateType state_type = StateType::kF32;
  // The CUDA backend replays decode steps whose shape it has seen as CUDA graphs (one launch
  // instead of ~25 per layer); off: every kernel launched one by one. Ignored by the CPU backend.
  bool cuda_graphs = true;
  // The CUDA backend walks long prompts' recurrence in chunks of 16 tokens (engine/cuda/wkv.cuh,
  // WkvForm); off: token by token, as a decode step does. Ignored by the CPU backend.
  bool cuda_chunked_wkv = true;
  // With 16-bit weights, a decode step of fewer than 16 sequences computes each layer's LoRA
  // up-projections inside its fused time-mixing kernel (engine/cuda/wkv_decode.cuh, LoraUp)
  // instead of launching them as products of their own; off: their own launch. Ignored by the
  // CPU backend.
  bool cuda_fused_lora_up = true;
  // A prefill step whose recurrence walks token by token (WkvForm::kWalk: many prompts at once)
  // runs each layer's time-mixing core (preparation, recurrence, GroupNorm + gate) as one kernel
  // (engine/cuda/wkv_prefill.cuh), one whose recurrence runs in chunks (long prompts) prepares
  // the raw rows inside the chunked recurrence (LaunchWkv7ChunkedPrefill, then GroupNorm + gate),
  // and a step of 16 rows or more its LayerNorms + token shifts
  // without the normalised rows in between (LaunchNormShiftRows); off: the separate kernels,
  // their rows through memory between them. Ignored by the CPU backend.
  bool cuda_fused_prefill = true;
  // With bf16 weights, a step of 16 rows or more has cuBLAS write the products whose activated
  // rows the next product reads (the channel mix's key, the decay and gate LoRAs' down
  // projections) in bf16, and runs the activation on those rows in place, instead of writing
  // f32 rows and reading them back: ~1.6 GB less in a 1.5B 16 x 128 prefill. The pre-activation
  // is then rounded to bf16 too (relu² doubles its relative error): on the random test model the
  // logits' distance to the CPU's bf16 grows from 2.8e-3 to 3.5e-3 of their standard deviation
  // (the bound is 1e-2). Off until a GPU measures what it saves. Ignored by the CPU backend.
  bool cuda_bf16_activation_rows = false;
  // Decode steps of a few sequences read only the channel mix's value weights whose input (a
  // relu^2 activation) is not zero in some sequence: about half of them with random weights,
  // fewer with trained ones. The CPU backend keeps a second, input-major copy of each value
  // matrix for steps of up to 4 rows (linear.h; results bit for bit the same); the CUDA backend
  // with 16-bit weights stores the matrix input-major only, for steps of up to 15 rows
  // (sparse_rows.cuh; cuBLAS reads it as well). Off: every weight read, no copy.
  bool sparse_ffn = true;
  int threads = 0;  // 0 = the CPUs this process may use (cpu::DetectCpuBudget)
  // The backend: "cpu", or "cuda" / "cuda:N" (device N, 0 by default; a build with the CUDA
  // backend, engine/cuda).
  std::string device = "cpu";

  absl::Status Validate() const;
  // -1 for "cpu", N for "cuda:N" ("cuda" is 0); INVALID_ARGUMENT naming `device` otherwise.
  absl::StatusOr<int> CudaDevice() const;
  // The slots to allocate for states of `state_bytes`: num_slots, or with state_memory_bytes as
  // many as it holds (at most 2^20); INVALID_ARGUMENT when it holds fewer than num_slots.
  absl::StatusOr<int> SlotsFor(int64_t state_bytes) const;
};

}  // namespace modrwkv
