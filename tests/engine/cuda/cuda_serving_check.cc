// The serving layer over the GPU backend: the scheduler (continuous batching, device sampling,
// sessions in a pool whose cold tier is pinned host memory on a GPU) answers over CudaModel as it
// answers over the CPU backend, on the trained demo model, whose greedy tokens the two backends
// agree on (cuda_model_check.cc). Part of `cuda_model_test`; skips without a device.
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda/cuda_check.h"
#include "engine/loader/initial_state_loader.h"
#include "engine/loader/model_loader.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/demo_assets.h"
#include "tests/engine/serving/await.h"
#include "tests/engine/serving/collecting_sink.h"

namespace modrwkv::cuda {
namespace {

EngineRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.prompt = {InputRows{std::move(prompt), {}}};
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  return r;
}

// Everything one backend answers: three requests at once on two slots, two more from a trained
// initial state and from zeros, then three sessions on those two slots (each turn moves a session
// through the cold tier), a second turn on each of two, a session made from the trained state,
// and a fork of the third continued twice. `cold_seen`: the most cold sessions at once.
std::vector<std::vector<int32_t>> Conversation(const std::string& model_path,
                                               const std::string& device, const Tokenizer& tok,
                                               int* cold_seen) {
  std::vector<std::vector<int32_t>> out;
  ModelOptions o;
  o.num_slots = 2;
  o.threads = 2;
  o.weight_type = ModelOptions::WeightType::kF32;
  o.device = device;
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(model_path, o);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return out;
  SchedulerOptions so;
  so.max_running = 2;
  auto sched = Scheduler::Create(model->get(), &tok, so).value();

  const std::vector<std::string> questions = {
      "User: What shape is in the picture?\n\nAssistant:",
      "User: What colour is the shape?\n\nAssistant:",
      "User: Where is the shape in the picture?\n\nAssistant:"};
  // A request's tokens once it has finished (a failed request fails the test).
  auto answer = [&](CollectingSink& sink) {
    const FinishEvent f = sink.Wait();
    EXPECT_TRUE(f.status.ok()) << f.status;
    out.push_back(sink.tokens());
  };
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const std::string& q : questions) {
    sinks.push_back(std::make_shared<CollectingSink>());
    EXPECT_TRUE(sched->Submit(Greedy(tok.Encode(q), 12), sinks.back()).ok());
  }
  for (auto& s : sinks) answer(*s);

  // From the demo's trained initial state: a request beside one from zeros, and a session.
  absl::StatusOr<InitialState> tuned = LoadInitialState(
      "detailed", testing_util::DemoAsset("assets/vision-demo/states/detailed.pth"),
      (*model)->config());
  EXPECT_TRUE(tuned.ok()) << tuned.status();
  if (!tuned.ok()) return out;
  auto initial = std::make_shared<const InitialState>(*std::move(tuned));
  sinks.clear();
  for (bool from_state : {true, false}) {
    sinks.push_back(std::make_shared<CollectingSink>());
    EngineRequest r = Greedy(tok.Encode(questions[0]), 12);
    if (from_state) r.initial_state = initial;
    EXPECT_TRUE(sched->Submit(r, sinks.back()).ok());
  }
  for (auto& s : sinks) answer(*s);

  auto turn = [&](SessionId id, const std::string& text) {
    auto sink = std::make_shared<CollectingSink>();
    EngineRequest r = Greedy(tok.Encode(text), 10);
    r.session = id;
    r.owner = "alice";
    EXPECT_TRUE(sched->Submit(r, sink).ok());
    answer(*sink);
    *cold_seen = std::max(*cold_seen, sched->stats().sessions_cold);
  };
  std::vector<SessionId> ids;
  for (int i = 0; i < 3; ++i) {
    auto info =
        Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("alice", done); });
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return out;
    ids.push_back(info->id);
    turn(info->id, questions[i]);
  }
  turn(ids[0], "\n\nUser: And its colour?\n\nAssistant:");
  turn(ids[1], "\n\nUser: Is it a circle?\n\nAssistant:");
  auto from_state = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->CreateSession("alice", done, initial); });
  EXPECT_TRUE(from_state.ok()) << from_state.status();
  if (!from_state.ok()) return out;
  turn(from_state->id, questions[1]);
  auto fork = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->ForkSession(ids[2], "alice", done); });
  EXPECT_TRUE(fork.ok()) << fork.status();
  if (!fork.ok()) return out;
  for (SessionId id : {ids[2], fork->id}) turn(id, "\n\nUser: Is it red?\n\nAssistant:");
  return out;
}

TEST(CudaServingTest, TheSchedulerOverTheGpuAnswersAsOverTheCpu) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  const std::string model = testing_util::DemoAsset("assets/vision-demo/rwkv-0.pth");
  const std::string vocab = testing_util::DemoAsset("assets/rwkv_vocab_v20230424.txt");
  if (model.empty() || vocab.empty()) GTEST_SKIP() << "the vision demo's assets not found";
  auto tok = Tokenizer::LoadFile(vocab).value();
  int cpu_cold = 0, gpu_cold = 0;
  const auto cpu = Conversation(model, "cpu", *tok, &cpu_cold);
  const auto gpu = Conversation(model, "cuda", *tok, &gpu_cold);
  ASSERT_EQ(gpu.size(), 13u);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_FALSE(gpu[i].empty()) << "answer " << i;
    EXPECT_EQ(gpu[i], cpu[i]) << "answer " << i;
  }
  EXPECT_GE(gpu_cold, 1);  // the turns went through the cold tier
  EXPECT_EQ(gpu_cold, cpu_cold);
}

}  // namespace
}  // namespace modrwkv::cuda
