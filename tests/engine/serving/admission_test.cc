// Admission as pure functions: request validation names the field; the queue bounds refuse with
// the right code, reason and metric label.
#include "engine/serving/admission.h"

#include "engine/base/errors.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.n_embd = 4;
  c.vocab_size = 100;
  return c;
}

TEST(ValidateEngineRequest, NamesWhatIsWrong) {
  EngineRequest r;
  EXPECT_NE(ValidateEngineRequest(r, Config()).message().find("prompt is empty"),
            std::string::npos);
  r.prompt = {InputRows{{1, 2}, {}}, InputRows{{}, {0, 0, 0, 0, 0, 0, 0, 0}}};
  EXPECT_TRUE(ValidateEngineRequest(r, Config()).ok());
  r.prompt[1].embeddings.push_back(0);  // 9 values, n_embd 4
  EXPECT_NE(ValidateEngineRequest(r, Config()).message().find("not a multiple of n_embd"),
            std::string::npos);
  r.prompt = {InputRows{{1, 100}, {}}};
  EXPECT_EQ(ValidateEngineRequest(r, Config()).code(), absl::StatusCode::kInvalidArgument);
  r.prompt = {InputRows{{1}, {1, 2, 3, 4}}};
  EXPECT_NE(ValidateEngineRequest(r, Config()).message().find("both tokens and embeddings"),
            std::string::npos);
}

TEST(CheckQueueBounds, RefusesWithReasonAndLabel) {
  SchedulerOptions o;
  o.max_queued_requests = 2;
  o.max_queued_prompt_tokens = 100;
  std::string_view label;
  EXPECT_TRUE(CheckQueueBounds({1, 60, false}, 40, o, &label).ok());
  absl::Status st = CheckQueueBounds({1, 60, false}, 41, o, &label);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(st), reason::kQueuedTokensFull);
  EXPECT_EQ(label, "queued_tokens");
  st = CheckQueueBounds({2, 0, false}, 1, o, &label);
  EXPECT_EQ(ReasonOf(st), reason::kQueueFull);
  EXPECT_EQ(label, "queue_full");
  st = CheckQueueBounds({0, 0, true}, 1, o, &label);  // draining wins over everything
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(st), reason::kDraining);
  EXPECT_EQ(label, "draining");
}

}  // namespace
}  // namespace modrwkv
