// cuda_bench: the CUDA backend against the device's own limits, on random weights of the released
// RWKV7 shapes. Engine only (no server libraries), so that tools/device-check.sh can carry it to a
// bare GPU machine. One run prints:
//   - the device's measured limits: copy bandwidth (a device-to-device cudaMemcpy, bytes read +
//     written per second) and the cuBLAS GEMM rate (bf16 inputs, f32 accumulation, 8192^3; and
//     the plain f32 SGEMM the f32 weights use);
//   - per shape and weight type: decode tokens/s at each batch (greedy tokens picked on the
//     device, as a server's plain greedy requests are) with the roofline of that step (weight
//     bytes + every sequence's state read and written, over the copy bandwidth) and the fraction
//     of it reached; prefill tokens/s with the product rate reached against the measured GEMM
//     rate; the batch-256 aggregate over batch 1; the state pool's capacity (sessions whose
//     states fit in the memory left after the weights and the scratch); and the cold tier's
//     moves (a session out of its slot and back: through ReadSlot / WriteSlot, and pinned).
//
//   cuda_bench [--shapes=0.1b,1.5b,2.9b,7.2b] [--dtypes=bf16] [--states=f32]
//              [--batches=1,64,256,1024] [--prefill=2048] [--steps=16] [--device=0]
//              [--graphs=on|off] [--overlap=on|off] [--early-loads=on|off]
//              [--chunked-wkv=on|off] [--fused-lora-up=on|off] [--fused-prefill=on|off]
//              [--bf16-activation-rows=on|off]
//              [--sparse-ffn=on|off] [--breakdown=on|off] [--kernels=on|off] [--smoke=on|off]
//
// --kernels=on first times single kernels in isolation, each launched back to back from a CUDA
// graph over weights that do not fit in L2: the few-row product at the layers' shapes (with and
// without overlapped launches, and cuBLAS at one row beside it), a decode step's LayerNorm +
// token shift, a prefill step's LayerNorm and token shift (four channels an access and one), the
// WKV of a decode token and of prompts, token by token and chunked, a prefill step's time-mixing
// core as three kernels and fused (walking and chunked), and the sparse value product (half and a
// tenth of the inputs nonzero) beside the dense one.
// --shapes= (empty) then skips the models.
// --overlap=off launches every kernel in plain stream order (no programmatic dependent launch:
// engine/cuda/launch.h), to measure what the overlap saves.
// --early-loads=off has the few-row products load their weights only after the wait for the
// kernel before them (launch.h, EarlyWeightLoads), to measure what loading them earlier saves.
// --chunked-wkv=off walks prompts' recurrence token by token (ModelOptions::cuda_chunked_wkv).
// --fused-lora-up=off launches a few-row decode step's LoRA up-projections as products of their
// own instead of computing them in the fused time-mixing kernel (ModelOptions::cuda_fused_lora_up).
// --fused-prefill=off runs a prefill step's time-mixing core as three kernels rather than one
// (walking) or two (chunked: the recurrence preparing its raw rows, then GroupNorm + gate), and
// its LayerNorms and token shifts with the normalised rows between them
// (ModelOptions::cuda_fused_prefill).
// --bf16-activation-rows=on has cuBLAS write the activated products' rows in bf16 and activates
// them in place (ModelOptions::cuda_bf16_activation_rows; off by default).
// --sparse-ffn=off reads every value weight in decode steps (ModelOptions::sparse_ffn; random
// weights leave half of the channel mix's activations zero, trained ones more).
// --smoke=on measures the device's limits at small sizes (figures that mean nothing): with
// --shapes=tiny and small --batches / --prefill, every code path in seconds (the CUDA emulator
// runs it so in the tests).
// --breakdown=on adds, per prefill and decode row, where the step's device time goes operation by
// operation (CudaModel::set_op_profile): each operation's share of the step, the bytes it moves
// and the FLOPs it computes (OpCost) as rates against the measured copy bandwidth and
// GEMM rate, and how close it runs to its bound (bytes at the one plus FLOPs at the other); then
// the step's total against the sum of the bounds.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/launch.h"
#include "engine/sampling/sampler.h"
#include "tests/engine/cuda/cuda_bench_timing.h"

namespace modrwkv::cuda {
namespace {

using bench::BenchKernels;
using bench::DeviceLimits;
using bench::TimeOnStream;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Args {
  std::vector<std::string> shapes = {"0.1b", "1.5b", "2.9b", "7.2b"};
  std::vector<std::string> dtypes = {"bf16"};
  std::vector<std::string> states = {"f32"};
  std::vector<int> batches = {1, 64, 256, 1024};
  int prefill = 2048;
  int steps = 16;
  int device = 0;
  bool graphs = true;
  bool overlap = true;
  bool early_loads = true;
  bool chunked_wkv = true;
  bool fused_lora_up = true;
  bool fused_prefill = true;
  bool bf16_activation_rows = false;
  bool sparse_ffn = true;
  bool breakdown = false;
  bool kernels = false;
  // The device's limits measured at small sizes (their figures then mean nothing): a run of
  // every code path in seconds, on a slow device or the CUDA emulator (its Emu.CudaBenchSmoke
  // test), before a GPU's minutes are spent on it.
  bool smoke = false;
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError("arguments are --name=value, got " + arg);
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    auto ints = [&](std::vector<int>* out) -> absl::Status {
      out->clear();
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(v, &n) || n <= 0) {
          return absl::InvalidArgumentError("--" + name + " takes positive integers");
        }
        out->push_back(n);
      }
      return absl::OkStatus();
    };
    std::vector<int> one;
    // The on|off switches.
    const std::pair<const char*, bool*> switches[] = {
        {"graphs", &a.graphs},
        {"overlap", &a.overlap},
        {"early-loads", &a.early_loads},
        {"chunked-wkv", &a.chunked_wkv},
        {"fused-lora-up", &a.fused_lora_up},
        {"fused-prefill", &a.fused_prefill},
        {"bf16-activation-rows", &a.bf16_activation_rows},
        {"sparse-ffn", &a.sparse_ffn},
        {"kernels", &a.kernels},
        {"smoke", &a.smoke},
        {"breakdown", &a.breakdown}};
    const auto sw = std::find_if(std::begin(switches), std::end(switches),
                                 [&](const auto& s) { return name == s.first; });
    if (sw != std::end(switches)) {
      if (value != "on" && value != "off") {
        return absl::InvalidArgumentError("--" + name + ": on or off");
      }
      *sw->second = value == "on";
    } else if (name == "shapes") {
      a.shapes = absl::StrSplit(value, ',');
    } else if (name == "dtypes") {
      a.dtypes = absl::StrSplit(value, ',');
    } else if (name == "states") {
      a.states = absl::StrSplit(value, ',');
    } else if (name == "batches") {
      MODRWKV_RETURN_IF_ERROR(ints(&a.batches));
    } else if (name == "prefill" || name == "steps" || name == "device") {
      if (name == "device") {  // 0 is a valid device
        if (!absl::SimpleAtoi(value, &a.device) || a.device < 0) {
          return absl::InvalidArgumentError("--device takes an index >= 0");
        }
        continue;
      }
      MODRWKV_RETURN_IF_ERROR(ints(&one));
      (name == "prefill" ? a.prefill : a.steps) = one[0];
    } else {
      return absl::InvalidArgumentError("unknown argument --" + name);
    }
  }
  for (const std::string& d : a.dtypes) {
    if (d != "f32" && d != "bf16" && d != "f16") {
      return absl::InvalidArgumentError("--dtypes: f32, bf16 or f16");
    }
  }
  for (const std::string& d : a.states) {
    if (d != "f32" && d != "f16") return absl::InvalidArgumentError("--states: f32 or f16");
  }
  return a;
}

absl::StatusOr<DeviceLimits> MeasureLimits(bool smoke) {
  DeviceLimits lim;
  MODRWKV_ASSIGN_OR_RETURN(CudaStream stream, CreateStream());
  cudaStream_t st = stream.get();
  {
    const size_t kBytes = smoke ? size_t{16} << 20 : size_t{2} << 30;
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<char> a, AllocDevice<char>(kBytes));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<char> b, AllocDevice<char>(kBytes));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a.get(), 1, kBytes, st));
    MODRWKV_ASSIGN_OR_RETURN(const double t, TimeOnStream(st, 10, [&]() -> absl::Status {
                               MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
                                   b.get(), a.get(), kBytes, cudaMemcpyDeviceToDevice, st));
                               return absl::OkStatus();
                             }));
    lim.copy_bytes_per_s = 2.0 * kBytes / t;
  }
  MODRWKV_ASSIGN_OR_RETURN(const CublasApi* blas, Cublas());
  cublasHandle_t h = nullptr;
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->Create(&h));
  std::unique_ptr<cublasContext, cublasStatus_t (*)(cublasHandle_t)> owner(h, blas->Destroy);
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->SetStream(h, st));
  const float alpha = 1.0f, beta = 0.0f;
  {
    const int n = smoke ? 256 : 8192;
    const size_t nn = static_cast<size_t>(n) * n;
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> a, AllocDevice<uint16_t>(nn));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> b, AllocDevice<uint16_t>(nn));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> c, AllocDevice<float>(nn));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a.get(), 0x3c, nn * 2, st));  // ~0.011
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b.get(), 0x3c, nn * 2, st));
    MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->SetMathMode(h, CUBLAS_DEFAULT_MATH));
    MODRWKV_ASSIGN_OR_RETURN(const double t, TimeOnStream(st, 10, [&]() -> absl::Status {
                               MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->GemmEx(
                                   h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.get(),
                                   CUDA_R_16BF, n, b.get(), CUDA_R_16BF, n, &beta, c.get(),
                                   CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                               return absl::OkStatus();
                             }));
    lim.bf16_flops = 2.0 * n * n * n / t;
  }
  {
    const int n = smoke ? 256 : 4096;
    const size_t nn = static_cast<size_t>(n) * n;
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> a, AllocDevice<float>(nn));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> b, AllocDevice<float>(nn));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> c, AllocDevice<float>(nn));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a.get(), 0x3c, nn * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b.get(), 0x3c, nn * 4, st));
    MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->SetMathMode(h, CUBLAS_PEDANTIC_MATH));
    MODRWKV_ASSIGN_OR_RETURN(
        const double t, TimeOnStream(st, 5, [&]() -> absl::Status {
          MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->Sgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha,
                                                     a.get(), n, b.get(), n, &beta, c.get(), n));
          return absl::OkStatus();
        }));
    lim.f32_flops = 2.0 * n * n * n / t;
  }
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  return lim;
}

// Multiply-adds per input row in the layers' matrices (the LM head runs once per sequence).
double LayerMacsPerRow(const ModelConfig& c) {
  const double C = c.n_embd;
  const double lora = c.d_decay + c.d_aaa + c.d_mv + c.d_gate;
  return c.n_layer * (4 * C * C + 2 * C * c.ffn_size + 2 * C * lora);
}

// The op profile of `steps` calls of `step` (CudaModel::set_op_profile), one table row per
// operation, the largest first.
template <typename Fn>
absl::Status PrintBreakdown(CudaModel& m, const DeviceLimits& lim, const std::string& tag,
                            const std::string& what, int steps, Fn step) {
  m.set_op_profile(true);
  absl::Status run;
  for (int i = 0; i < steps && run.ok(); ++i) run = step();
  m.set_op_profile(false);
  MODRWKV_ASSIGN_OR_RETURN(std::vector<CudaModel::OpTime> ops, m.TakeOpProfile());
  MODRWKV_RETURN_IF_ERROR(run);
  // Each operation against its own bound (OpCost): its bytes at the copy bandwidth
  // plus its FLOPs at the GEMM rate; the step's sum of bounds against its time says how much a
  // faster form of the same operations could win, and which operations hold it back.
  const double gemm_rate = m.info().weight_dtype == "f32" ? lim.f32_flops : lim.bf16_flops;
  auto bound = [&](const OpCost& c) {
    return c.bytes / lim.copy_bytes_per_s + c.flops / gemm_rate;
  };
  double total = 0, total_bound = 0;
  OpCost all;
  for (const CudaModel::OpTime& t : ops) {
    total += t.seconds;
    total_bound += bound(t.cost);
    all += t.cost;
  }
  std::sort(ops.begin(), ops.end(),
            [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  for (const CudaModel::OpTime& t : ops) {
    std::string moves;
    if (t.cost.bytes > 0) {
      const double bw = t.cost.bytes / t.seconds;
      moves =
          absl::StrFormat("; moves %.1f MB at %.0f GB/s = %.0f%% of the copy bandwidth",
                          t.cost.bytes / steps / 1e6, bw / 1e9, 100 * bw / lim.copy_bytes_per_s);
    }
    if (t.cost.flops > 0) {
      moves += absl::StrFormat("; %.1f TFLOP/s = %.0f%% of the GEMM rate",
                               t.cost.flops / t.seconds / 1e12,
                               100 * t.cost.flops / t.seconds / gemm_rate);
    }
    if (t.cost.bytes > 0) {
      moves += absl::StrFormat("; at %.0f%% of its bound", 100 * bound(t.cost) / t.seconds);
    }
    std::printf("| %s | %s: %s | | %.3f | | %.1f%% of the step's device time%s |\n", tag.c_str(),
                what.c_str(), t.op.c_str(), t.seconds / steps * 1e3, 100 * t.seconds / total,
                moves.c_str());
  }
  std::printf(
      "| %s | %s: every operation | | %.3f | | moves %.1f MB (%.1f MB of weights), %.2f GFLOP; "
      "bound %.3f ms: the operations run at %.0f%% of their bounds |\n",
      tag.c_str(), what.c_str(), total / steps * 1e3, all.bytes / steps / 1e6,
      all.weight_bytes / steps / 1e6, all.flops / steps / 1e9, total_bound / steps * 1e3,
      100 * total_bound / total);
  return absl::OkStatus();
}

// The cold tier: sessions moved out of their slot and back, as the state pool does when more
// sessions are resumed than there are slots. Through host memory as export and import do
// (ReadSlot to pageable memory and WriteSlot back, each waited for), against OffloadSlot /
// RestoreSlot (pinned memory, queued on the stream): the host's time to issue them, and the time
// until the copies are done.
absl::Status BenchColdTier(CudaModel& m, const std::string& tag, double state_bytes) {
  constexpr int kMoves = 4;  // within the pinned buffers PinnedStates keeps as spares
  std::vector<float> host(m.config().StateFloats());
  std::vector<std::unique_ptr<ColdState>> cold(kMoves);
  auto t0 = Clock::now();
  for (int k = 0; k < kMoves; ++k) {
    MODRWKV_RETURN_IF_ERROR(m.ReadSlot(0, absl::MakeSpan(host)));
    MODRWKV_RETURN_IF_ERROR(m.WriteSlot(1, host));
  }
  const double through_host = Seconds(t0) / kMoves;
  double issue_out = 0, done_out = 0, issue_back = 0, done_back = 0;
  for (int rep = 0; rep < 2; ++rep) {  // the first pins the buffers
    t0 = Clock::now();
    for (int k = 0; k < kMoves; ++k) {
      MODRWKV_ASSIGN_OR_RETURN(cold[k], m.OffloadSlot(0));
    }
    issue_out = Seconds(t0) / kMoves;
    MODRWKV_RETURN_IF_ERROR(cold.back()->Read(absl::MakeSpan(host)));  // waits for all of them
    done_out = Seconds(t0) / kMoves;
    t0 = Clock::now();
    for (int k = 0; k < kMoves; ++k) MODRWKV_RETURN_IF_ERROR(m.RestoreSlot(1, *cold[k]));
    issue_back = Seconds(t0) / kMoves;
    MODRWKV_RETURN_IF_ERROR(m.ReadSlot(2, absl::MakeSpan(host)));  // after the restores
    done_back = Seconds(t0) / kMoves;
    for (auto& c : cold) c.reset();
  }
  std::printf(
      "| %s | cold tier: out and back through ReadSlot / WriteSlot | | %.3f | | host "
      "waits for all of it; %.1f GB/s |\n",
      tag.c_str(), through_host * 1e3, 2 * state_bytes / through_host / 1e9);
  std::printf(
      "| %s | cold tier: out and back, pinned and queued | | %.3f | | host busy %.0f + "
      "%.0f us; out %.1f GB/s, back %.1f GB/s (back includes one ReadSlot) |\n",
      tag.c_str(), (done_out + done_back) * 1e3, issue_out * 1e6, issue_back * 1e6,
      state_bytes / done_out / 1e9, state_bytes / done_back / 1e9);
  return absl::OkStatus();
}

absl::Status BenchShape(const Args& args, const DeviceLimits& lim, const std::string& shape,
                        const std::string& dtype, const std::string& state) {
  MODRWKV_ASSIGN_OR_RETURN(RandomModelSpec spec, RandomSpecForShape(shape));
  spec.vocab_size = args.smoke ? 1024 : 65536;  // the released vocabulary; smoke: seconds
  spec.seed = 2024;
  spec.dtype = dtype == "f32" ? DType::kF32 : DType::kBF16;  // f16: bf16 values, converted
  const int max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  const auto t_load = Clock::now();
  std::unique_ptr<CudaModel> model;
  {
    MODRWKV_ASSIGN_OR_RETURN(std::vector<OwnedTensor> tensors, MakeRandomRwkv7(spec));
    ModelOptions o;
    o.num_slots = std::max(max_batch, 16);
    o.weight_type = dtype == "bf16"  ? ModelOptions::WeightType::kBF16
                    : dtype == "f16" ? ModelOptions::WeightType::kF16
                                     : ModelOptions::WeightType::kF32;
    o.state_type = state == "f16" ? ModelOptions::StateType::kF16 : ModelOptions::StateType::kF32;
    o.cuda_graphs = args.graphs;
    o.cuda_chunked_wkv = args.chunked_wkv;
    o.cuda_fused_lora_up = args.fused_lora_up;
    o.cuda_fused_prefill = args.fused_prefill;
    o.cuda_bf16_activation_rows = args.bf16_activation_rows;
    o.sparse_ffn = args.sparse_ffn;
    MODRWKV_ASSIGN_OR_RETURN(model, CudaModel::Create(ViewsOf(tensors), o, args.device));
  }  // the host copy of the weights is freed here
  CudaModel& m = *model;
  const ModelConfig& cfg = m.config();
  std::fprintf(stderr, "%s %s, %s state: built and loaded in %.1f s\n", shape.c_str(),
               dtype.c_str(), state.c_str(), Seconds(t_load));
  const double weight_bytes = static_cast<double>(m.info().decode_bytes_per_token);
  // The bytes one sequence's state occupies in the pool (the canonical blob is f32 either way).
  const double state_bytes = m.StateBytes() * (state == "f16" ? 0.5 : 1.0);
  const std::string tag =
      shape + " | " + dtype + ", " + state + " state" + (args.graphs ? "" : ", no graphs") +
      (args.overlap ? "" : ", no overlap") + (args.early_loads ? "" : ", late loads") +
      (args.sparse_ffn ? "" : ", dense ffn") +
      (args.bf16_activation_rows ? ", bf16 activation rows" : "");
  std::vector<StepResult> results;

  // Prefill: one sequence of `prefill` rows, then 16 sequences of prefill / 16, each one step;
  // logits after each sequence's last row.
  for (const int seqs : {1, 16}) {
    const int per = std::max(1, args.prefill / seqs);
    std::vector<int32_t> tokens(per);
    for (int i = 0; i < per; ++i) tokens[i] = (i * 7919) % cfg.vocab_size;
    std::vector<StepEntry> entries(seqs);
    for (int s = 0; s < seqs; ++s) {
      entries[s].slot = s;
      entries[s].inputs = {InputRowsView::Tokens(tokens)};
      entries[s].output = StepOutput::kLogits;
    }
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {  // the first is the warm-up (scratch allocation)
      for (int s = 0; s < seqs; ++s) MODRWKV_RETURN_IF_ERROR(m.ResetSlot(s));
      const auto t0 = Clock::now();
      MODRWKV_RETURN_IF_ERROR(m.Step(entries, &results));
      if (rep > 0) best = std::min(best, Seconds(t0));
    }
    const double rows = static_cast<double>(per) * seqs;
    const double flops =
        2 * (LayerMacsPerRow(cfg) * rows + static_cast<double>(cfg.vocab_size) * cfg.n_embd * seqs);
    const double peak = dtype == "f32" ? lim.f32_flops : lim.bf16_flops;  // f16: the same rate
    std::printf(
        "| %s | prefill %d x %d | %.0f | %.2f | | %.0f TFLOP/s = %.0f%% of the GEMM rate |\n",
        tag.c_str(), seqs, per, rows / best, best * 1e3, flops / best / 1e12,
        100 * flops / best / peak);
    if (args.breakdown) {
      MODRWKV_RETURN_IF_ERROR(PrintBreakdown(
          m, lim, tag, absl::StrFormat("prefill %d x %d", seqs, per), 1, [&]() -> absl::Status {
            for (int s = 0; s < seqs; ++s) MODRWKV_RETURN_IF_ERROR(m.ResetSlot(s));
            return m.Step(entries, &results);
          }));
    }
  }

  // Decode: B sequences, one token each per step, greedy on the device (sample.cu at temperature
  // 0); then, at the largest batch up to 256, sampled on the device (sample.cu: temperature, top-p,
  // penalties), the same with top-5 logprobs, and the logits copied to the host (what a sampler
  // with a grammar constraint needs), to show what each costs.
  SamplerConfig greedy;
  greedy.temperature = 0;
  SamplerConfig drawn;
  drawn.temperature = 1.0f;
  drawn.top_p = 0.95f;
  drawn.presence_penalty = 0.3f;
  drawn.seed = 1;
  SamplerConfig with_logprobs = drawn;
  with_logprobs.logprobs_top_n = 5;
  // sc null: the logits come back (StepOutput::kLogits).
  // Seconds per step, and the share of it the device was busy (CudaModel's step events: the rest
  // is host work a pipelined Step could hide).
  struct Timing {
    double per_step = 0, device_share = 0;
  };
  auto run = [&](int b, const SamplerConfig* sc) -> absl::StatusOr<Timing> {
    std::vector<std::unique_ptr<Sampler>> samplers;
    std::vector<int32_t> next(b);
    std::vector<StepEntry> entries(b);
    for (int i = 0; i < b; ++i) {
      next[i] = 100 + i;
      entries[i].slot = i;
      entries[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&next[i], 1))};
      entries[i].output = sc != nullptr ? StepOutput::kSample : StepOutput::kLogits;
      if (sc == nullptr) continue;
      MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<Sampler> s, Sampler::Create(*sc, cfg.vocab_size));
      samplers.push_back(std::move(s));
      entries[i].sampler = samplers.back().get();
    }
    for (int w = 0; w < 2; ++w) {  // warm-up: scratch growth, then the graph's capture
      MODRWKV_RETURN_IF_ERROR(m.Step(entries, &results));
    }
    double device = 0;
    const auto t0 = Clock::now();
    for (int k = 0; k < args.steps; ++k) {
      MODRWKV_RETURN_IF_ERROR(m.Step(entries, &results));
      device += m.last_step_device_seconds();
    }
    const double wall = Seconds(t0);
    if (args.breakdown && sc == &greedy) {
      MODRWKV_RETURN_IF_ERROR(PrintBreakdown(m, lim, tag, absl::StrFormat("decode batch %d", b), 4,
                                             [&] { return m.Step(entries, &results); }));
    }
    return Timing{wall / args.steps, device / wall};
  };
  std::map<int, double> tokens_per_s;
  int sampled_batch = 0;
  for (const int b : args.batches) {
    MODRWKV_ASSIGN_OR_RETURN(const Timing t, run(b, &greedy));
    const double per_step = t.per_step;
    const double roofline = (weight_bytes + 2 * state_bytes * b) / lim.copy_bytes_per_s;
    tokens_per_s[b] = b / per_step;
    if (b <= 256) sampled_batch = std::max(sampled_batch, b);
    std::printf(
        "| %s | decode batch %d | %.0f | %.3f | %.3f | %.0f%% of the roofline; device busy "
        "%.0f%% of the step |\n",
        tag.c_str(), b, b / per_step, per_step * 1e3, roofline * 1e3, 100 * roofline / per_step,
        100 * t.device_share);
  }
  if (sampled_batch > 0) {
    for (const auto& [what, sc] : {std::pair<const char*, const SamplerConfig*>{
                                       "sampled on the device (T 1, top-p 0.95)", &drawn},
                                   {"the same with top-5 logprobs", &with_logprobs},
                                   {"logits to the host", nullptr}}) {
      MODRWKV_ASSIGN_OR_RETURN(const Timing t, run(sampled_batch, sc));
      const double per_step = t.per_step;
      std::printf(
          "| %s | decode batch %d, %s | %.0f | %.3f | | %.2fx the greedy step; device busy "
          "%.0f%% |\n",
          tag.c_str(), sampled_batch, what, sampled_batch / per_step, per_step * 1e3,
          per_step * tokens_per_s[sampled_batch] / sampled_batch, 100 * t.device_share);
    }
  }
  if (tokens_per_s.count(1) && tokens_per_s.count(256)) {
    std::printf("| %s | batch 256 / batch 1 | %.1fx | | | aggregate tokens/s |\n", tag.c_str(),
                tokens_per_s[256] / tokens_per_s[1]);
  }

  // Capacity: what the memory left after the weights and this run's scratch holds.
  size_t free_b = 0, total_b = 0;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_b, &total_b));
  const double reserve = 1.0 * (1 << 30);  // cuBLAS workspace, fragmentation
  const double pool = static_cast<double>(free_b) + state_bytes * m.num_slots() - reserve;
  std::printf("| %s | state pool | %.0f sessions | | | %.1f MB each |\n", tag.c_str(),
              pool / state_bytes, state_bytes / 1e6);
  return BenchColdTier(m, tag, state_bytes);
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  };
  if (!args.ok()) return fail(args.status());
  SetOverlappedLaunches(args->overlap);
  SetEarlyWeightLoads(args->early_loads);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every row out at once, even if the run is cut short
  if (cudaError_t e = cudaSetDevice(args->device); e != cudaSuccess) {
    return fail(CudaStatus(e, "cudaSetDevice"));
  }
  cudaDeviceProp prop{};
  if (cudaError_t e = cudaGetDeviceProperties(&prop, args->device); e != cudaSuccess) {
    return fail(CudaStatus(e, "cudaGetDeviceProperties"));
  }
  absl::StatusOr<DeviceLimits> lim = MeasureLimits(args->smoke);
  if (!lim.ok()) return fail(lim.status());
  std::printf(
      "%s, %.0f GiB: copy %.0f GB/s (read + write), cuBLAS bf16 %.0f TFLOP/s, "
      "f32 SGEMM %.1f TFLOP/s\n\n",
      prop.name, prop.totalGlobalMem / double(1 << 30), lim->copy_bytes_per_s / 1e9,
      lim->bf16_flops / 1e12, lim->f32_flops / 1e12);
  if (args->kernels) {
    if (absl::Status s = BenchKernels(*lim, args->smoke); !s.ok()) return fail(s);
    SetOverlappedLaunches(args->overlap);
    SetEarlyWeightLoads(args->early_loads);
  }
  std::printf(
      "| shape | weights, state | what | tokens/s | ms per step | roofline ms | ratio |\n"
      "|---|---|---|---|---|---|---|\n");
  int status = 0;
  for (const std::string& dtype : args->dtypes) {
    for (const std::string& state : args->states) {
      for (const std::string& shape : args->shapes) {
        if (shape.empty()) continue;  // --shapes= : none
        if (absl::Status s = BenchShape(*args, *lim, shape, dtype, state); !s.ok()) {
          std::printf("| %s | %s, %s state | failed: %s |\n", shape.c_str(), dtype.c_str(),
                      state.c_str(), s.ToString().c_str());
          status = 1;
        }
        std::fflush(stdout);
      }
    }
  }
  return status;
}

}  // namespace
}  // namespace modrwkv::cuda

int main(int argc, char** argv) { return modrwkv::cuda::Main(argc, argv); }
