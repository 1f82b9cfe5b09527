// The Timer time-series encoder on the GPU (encoders/cuda/cuda_timer.h) against the CPU's
// TimerEncoder and the official TimerModel's outputs (tests/golden/timeseries_timer: patch 8,
// width 32, 4 heads, two layers, two channels). GPU cases skip without a device; run on the CPU
// through the CUDA emulator (tests/engine/cuda/emu).
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "encoders/cuda/cuda_adapter.h"
#include "encoders/cuda/cuda_timer.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/cpu/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/encoders/cuda/check_util.h"
#include "tests/encoders/timeseries/ts_golden.h"

namespace modrwkv::encoders::cuda {
namespace {

// The fixture's folder: relative to the working directory first (tools/device-check.sh runs the
// packed binary from a copy of the repository root on another machine), then in the source tree.
std::string TimerDir() {
  const std::string relative = "tests/golden/timeseries_timer/";
  return std::filesystem::exists(relative) ? relative : ts_golden::kTimerDir;
}

absl::StatusOr<std::unique_ptr<TimerEncoder>> LoadGoldenTimer() {
  const TimeSeriesManifest m = ts_golden::TimerManifest();
  return TimerEncoder::Load(ts_golden::FixtureCheckpoint(TimerDir()).tensors(), kTsEncoderPrefix,
                            m.heads, m.rope_theta);
}

std::vector<float> Patches(int R, int S, int P, int seed) {
  std::vector<float> v(static_cast<size_t>(R) * S * P);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * i + seed) + 0.02f * (i % 11);
  return v;
}

// Every (sequences, patches) shape through one runner against the CPU: one patch (no attention
// to speak of), several sequences that must not see each other, and positions up to 40 (the
// rotary embedding's later angles); the scratch grown by the largest call, then reused.
TEST(CudaTimerTest, MatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto cpu = LoadGoldenTimer();
  auto gpu = LoadGoldenTimer();
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status();
  const absl::Status placed = (*gpu)->UseRunner(CudaTimer::Factory(0));
  ASSERT_TRUE(placed.ok()) << placed;
  EXPECT_TRUE((*gpu)->placed());
  EXPECT_FALSE((*cpu)->placed());
  EXPECT_EQ((*gpu)->heads(), 4);
  cpu::ThreadPool pool(2);
  for (const auto& [R, S] : {std::pair{1, 1}, {7, 3}, {40, 2}, {25, 1}}) {
    const std::vector<float> patches = Patches(R, S, 8, R + S);
    auto want = (*cpu)->Encode(patches, R, &pool, S);
    auto got = (*gpu)->Encode(patches, R, &pool, S);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status();
    ASSERT_EQ(got->size(), static_cast<size_t>(R) * S * 32);
    EXPECT_LT(RelErr(*want, *got), 1e-5) << S << " x " << R;
  }
  EXPECT_FALSE((*gpu)->Encode(Patches(3, 2, 8, 0), 3, &pool, 1).ok());  // 2 sequences' values
}

// Through the time-series pipeline placed on the GPU (the Timer and its adapter, as the model
// bundle places them with --device cuda): the official module's adapter rows of every golden case.
TEST(CudaTimerTest, PipelineOnTheGpuMatchesTheReference) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = TimerDir();
  auto p = TimeSeriesPipeline::Load(ts_golden::FixtureCheckpoint(dir).tensors(),
                                    ts_golden::TimerManifest(), ts_golden::kNEmbd, "gpu-timer",
                                    {CudaTimer::Factory(0), CudaAdapter::Factory(0)});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE((*p)->timer(), nullptr);
  EXPECT_TRUE((*p)->timer()->placed());
  EXPECT_TRUE((*p)->adapter().placed());
  const nlohmann::json cases = ts_golden::Fixtures(dir)["cases"];
  ASSERT_EQ(cases.size(), 3u);
  cpu::ThreadPool pool(1);
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto rows = (*p)->EncodeSeries(ts_golden::Input(c, dir), "series", &pool);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_LT(golden::MaxRelDiff(rows->data, ts_golden::Floats(c["adapter_rows"], dir)), 1e-5);
  }
}

// With TF32 products (EncoderMath::kTf32) the Timer stays near the CPU and differs from its f32
// products (the mode reached cuBLAS).
TEST(CudaTimerTest, Tf32ProductsStayNearTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto cpu = LoadGoldenTimer();
  auto f32 = LoadGoldenTimer();
  auto tf32 = LoadGoldenTimer();
  ASSERT_TRUE(cpu.ok() && f32.ok() && tf32.ok());
  ASSERT_TRUE((*f32)->UseRunner(CudaTimer::Factory(0, EncoderMath::kF32)).ok());
  ASSERT_TRUE((*tf32)->UseRunner(CudaTimer::Factory(0, EncoderMath::kTf32)).ok());
  const int R = 25, S = 2;
  const std::vector<float> patches = Patches(R, S, 8, 3);
  auto want = (*cpu)->Encode(patches, R, nullptr, S);
  auto a = (*f32)->Encode(patches, R, nullptr, S);
  auto b = (*tf32)->Encode(patches, R, nullptr, S);
  ASSERT_TRUE(want.ok() && a.ok() && b.ok());
  EXPECT_LT(RelErr(*want, *b), 3e-3);
  EXPECT_GT(RelErr(*a, *b), 1e-5) << "no sign of TF32";
  RecordProperty("tf32_rel_err", absl::StrFormat("%.3g", RelErr(*want, *b)));
}

// Weights whose sizes disagree are refused before any device is opened.
TEST(CudaTimerTest, RefusesWeightsThatDisagree) {
  EXPECT_EQ(CudaTimer::Create(TimerWeights(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  TimerWeights w;
  w.embed.rows = 32;  // (its sizes are all that is checked before the heads)
  w.embed.cols = 8;
  w.heads = 3;  // does not divide 32
  EXPECT_EQ(CudaTimer::Create(w, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::encoders::cuda
