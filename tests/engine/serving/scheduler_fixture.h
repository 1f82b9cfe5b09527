// The scheduler tests' fixture: a tiny random-weight CPU model, the World tokenizer, greedy
// requests and their single-sequence reference (scheduler_test.cc, scheduler_order_test.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/checkpoint/random_weights.h"
#include "engine/loader/model_loader.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace modrwkv::testing_scheduler {

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RandomModelSpec spec;
    spec.n_layer = 2;
    spec.n_embd = 64;
    spec.vocab_size = 512;
    spec.seed = 5;
    tensors_ = new std::vector<OwnedTensor>(MakeRandomRwkv7(spec).value());
    tok_ = Tokenizer::LoadFile(testing_paths::WorldVocab()).value().release();
  }
  static void TearDownTestSuite() {
    delete tensors_;
    delete tok_;
  }

  std::unique_ptr<Model> MakeModel(int slots) {
    ModelOptions o;
    o.num_slots = slots;
    o.threads = 2;
    o.weight_type = ModelOptions::WeightType::kF32;
    return CreateModel(ViewsOf(*tensors_), o).value();
  }

  static EngineRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
    EngineRequest r;
    r.prompt = {InputRows{std::move(prompt), {}}};
    r.sampling.temperature = 0;
    r.stop.max_tokens = max_tokens;
    return r;
  }

  // Greedy continuation computed directly on a model, one sequence, no scheduler; from the zero
  // state or from `initial`.
  std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int n,
                                 const InitialState* initial = nullptr) {
    auto m = MakeModel(1);
    if (initial) {
      EXPECT_TRUE(m->WriteSlot(0, initial->state).ok());
    }
    SamplerConfig p;
    p.temperature = 0;
    auto sampler = Sampler::Create(p, m->config().vocab_size).value();
    StepEntry e;
    e.slot = 0;
    e.sampler = sampler.get();
    e.output = StepOutput::kSample;
    e.inputs = {InputRowsView::Tokens(prompt)};
    std::vector<StepResult> res;
    std::vector<int32_t> out;
    int32_t tok[1];
    for (int i = 0; i < n; ++i) {
      EXPECT_TRUE(m->Step({e}, &res).ok());
      out.push_back(res[0].token);
      tok[0] = res[0].token;
      e.inputs = {InputRowsView::Tokens(tok)};
    }
    return out;
  }

  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = 1 + (i * 37 + salt * 101) % 500;
    return p;
  }

  static inline std::vector<OwnedTensor>* tensors_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

}  // namespace modrwkv::testing_scheduler
