#include "engine/serving/batch_policy.h"

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
  EXPECT_EQ(RowsOf(plan, 3), 30);  // the short prompt runs whole, though it came later
  EXPECT_EQ(RowsOf(plan, 1), 67);  // the long one takes the rest
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

TEST(PlanStep, LongPromptsShareEquallyAndNoneStarves) {
  BatchPolicyOptions o;
  o.max_step_tokens = 90;
  o.min_prefill_rows = 8;
  auto plan = PlanStep({{100000}, {5000}, {100000}, {10}}, o);
  EXPECT_EQ(RowsOf(plan, 3), 10);
  // 80 rows left for three long prompts: 26, 26, and the last visited takes the remainder.
  EXPECT_EQ(RowsOf(plan, 0) + RowsOf(plan, 1) + RowsOf(plan, 2), 80);
  for (int i : {0, 1, 2}) EXPECT_GE(RowsOf(plan, i), 26);
  // Slices come out in admission order.
  for (size_t i = 1; i < plan.size(); ++i) EXPECT_LT(plan[i - 1].sequence, plan[i].sequence);
}

TEST(PlanStep, MorePromptsThanRowsGiveOneRowToTheShortestFirst) {
  BatchPolicyOptions o;
  o.max_step_tokens = 2;
  o.min_prefill_rows = 2;
  auto plan = PlanStep({{50}, {7}, {9}}, o);
  EXPECT_EQ(RowsOf(plan, 1), 1);
  EXPECT_EQ(RowsOf(plan, 2), 1);
  EXPECT_EQ(RowsOf(plan, 0), 0);
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
