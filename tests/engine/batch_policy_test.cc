#include "engine/batch_policy.h"

#include "gtest/gtest.h"

namespace modrwkv {
namespace {

int RowsOf(const std::vector<StepSlice>& plan, int seq) {
  for (const StepSlice& s : plan)
    if (s.sequence == seq) return s.rows;
  return 0;
}

TEST(PlanStep, EveryDecodeGetsOneTokenAndPrefillTheRest) {
  BatchPolicyOptions o;
  o.max_step_tokens = 100;
  o.min_prefill_rows = 8;
  std::vector<SequenceLoad> run = {{0}, {500}, {0}, {30}, {0}};
  auto plan = PlanStep(run, o);
  EXPECT_EQ(RowsOf(plan, 0), 1);
  EXPECT_EQ(RowsOf(plan, 2), 1);
  EXPECT_EQ(RowsOf(plan, 4), 1);
  EXPECT_EQ(RowsOf(plan, 1), 97);  // first come, first served
  EXPECT_EQ(RowsOf(plan, 3), 0);
  int total = 0;
  for (auto& s : plan) total += s.rows;
  EXPECT_EQ(total, 100);
}

TEST(PlanStep, SmallPromptsShareTheBudget) {
  BatchPolicyOptions o;
  o.max_step_tokens = 64;
  auto plan = PlanStep({{10}, {20}, {50}}, o);
  EXPECT_EQ(RowsOf(plan, 0), 10);
  EXPECT_EQ(RowsOf(plan, 1), 20);
  EXPECT_EQ(RowsOf(plan, 2), 34);
}

TEST(PlanStep, PrefillKeepsMovingUnderFullDecodeLoad) {
  BatchPolicyOptions o;
  o.max_step_tokens = 16;
  o.min_prefill_rows = 4;
  std::vector<SequenceLoad> run(20);  // 20 decoders, over budget
  run.push_back({1000});
  auto plan = PlanStep(run, o);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(RowsOf(plan, i), 1);
  EXPECT_EQ(RowsOf(plan, 20), 4);
}

TEST(PlanStep, NothingToDo) { EXPECT_TRUE(PlanStep({}, BatchPolicyOptions{}).empty()); }

TEST(PlanStep, OnlyDecodesIgnoreTheBudget) {
  BatchPolicyOptions o;
  o.max_step_tokens = 2;
  auto plan = PlanStep(std::vector<SequenceLoad>(5), o);
  EXPECT_EQ(plan.size(), 5u);
}

}  // namespace
}  // namespace modrwkv
