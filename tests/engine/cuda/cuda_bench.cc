// cuda_bench: prefill and batched-decode throughput of the CUDA backend on random weights of a
// real shape, with the weight bytes each decode step reads as an effective bandwidth (the
// roofline of batch-1 decode). Engine only (no server libraries), so that tools/device-check.sh
// can carry it to a bare GPU machine.
//   cuda_bench [shape=0.1b] [prompt=512] [steps=32] [device=0] [dtype=f32|bf16]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/checkpoint/random_weights.h"
#include "engine/cuda/cuda_model.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace modrwkv;
  const std::string shape = argc > 1 ? argv[1] : "0.1b";
  const int prompt = argc > 2 ? std::atoi(argv[2]) : 512;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 32;
  const int device = argc > 4 ? std::atoi(argv[4]) : 0;
  const std::string dtype = argc > 5 ? argv[5] : "f32";
  absl::StatusOr<RandomModelSpec> spec = RandomSpecForShape(shape);
  if (!spec.ok()) return Fail(spec.status());
  spec->vocab_size = 65536;
  spec->seed = 2024;
  auto tensors = MakeRandomRwkv7(*spec);
  if (!tensors.ok()) return Fail(tensors.status());
  const std::vector<int> batches = {1, 8, 32, 64};
  ModelOptions o;
  o.num_slots = 64;
  o.weight_type =
      dtype == "bf16" ? ModelOptions::WeightType::kBF16 : ModelOptions::WeightType::kF32;
  auto model = cuda::CudaModel::Create(ViewsOf(*tensors), o, device);
  if (!model.ok()) return Fail(model.status());
  cuda::CudaModel& m = **model;
  const double step_bytes = static_cast<double>(m.info().decode_bytes_per_token);
  std::printf(
      "| shape | weights | what | tokens/s | ms per step | weight GB/s |\n"
      "|---|---|---|---|---|---|\n");

  // Prefill: one prompt in one step, logits after its last row.
  std::vector<int32_t> tokens(prompt);
  for (int i = 0; i < prompt; ++i) tokens[i] = (i * 7919) % 65536;
  std::vector<StepResult> results;
  for (int warm = 0; warm < 2; ++warm) {
    StepEntry e;
    e.slot = 0;
    e.inputs = {InputRowsView::Tokens(tokens)};
    e.output = StepOutput::kLogits;
    if (absl::Status s = m.ResetSlot(0); !s.ok()) return Fail(s);
    const auto t0 = Clock::now();
    if (absl::Status s = m.Step({e}, &results); !s.ok()) return Fail(s);
    const double t = Seconds(t0);
    if (warm == 1) {
      std::printf("| %s | %s | prefill %d | %.0f | %.2f | |\n", shape.c_str(), dtype.c_str(),
                  prompt, prompt / t, t * 1e3);
    }
  }
  // Decode: B sequences, one token each per step.
  for (int b : batches) {
    std::vector<int32_t> next(b);
    for (int i = 0; i < b; ++i) next[i] = 100 + i;
    std::vector<StepEntry> entries(b);
    for (int i = 0; i < b; ++i) {
      entries[i].slot = i;
      entries[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&next[i], 1))};
      entries[i].output = StepOutput::kLogits;
    }
    if (absl::Status s = m.Step(entries, &results); !s.ok()) return Fail(s);  // warm-up
    const auto t0 = Clock::now();
    for (int k = 0; k < steps; ++k) {
      if (absl::Status s = m.Step(entries, &results); !s.ok()) return Fail(s);
    }
    const double per_step = Seconds(t0) / steps;
    std::printf("| %s | %s | decode batch %d | %.0f | %.3f | %.0f |\n", shape.c_str(),
                dtype.c_str(), b, b / per_step, per_step * 1e3, step_bytes / per_step / 1e9);
  }
  return 0;
}
