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

SequenceLoad Prompt(int rows, int priority = 0, int caller = 0) {
  SequenceLoad s;
  s.prefill_remaining = rows;
  s.priority = priority;
  s.caller = caller;
  return s;
}

TEST(PlanStep, HigherPriorityPromptsTakeTheRowsFirst) {
  BatchPolicyOptions o;
  o.max_step_tokens = 101;
  o.min_prefill_rows = 8;
  // A decode of priority -5 still runs; the priority-3 prompts share first, then priority 0.
  auto plan =
      PlanStep({Prompt(10, 0), Prompt(70, 3), Prompt(0, -5), Prompt(40, 3), Prompt(30, -1)}, o);
  EXPECT_EQ(RowsOf(plan, 2), 1);
  EXPECT_EQ(RowsOf(plan, 3), 40);
  EXPECT_EQ(RowsOf(plan, 1), 60);  // 100 rows: the shorter one whole, the longer the rest
  EXPECT_EQ(RowsOf(plan, 0), 0);
  EXPECT_EQ(RowsOf(plan, 4), 0);
  // Rows a level leaves go to the next one down.
  plan = PlanStep({Prompt(10, 0), Prompt(20, 3), Prompt(0, -5), Prompt(40, 3), Prompt(300, -1)}, o);
  EXPECT_EQ(RowsOf(plan, 1), 20);
  EXPECT_EQ(RowsOf(plan, 3), 40);
  EXPECT_EQ(RowsOf(plan, 0), 10);
  EXPECT_EQ(RowsOf(plan, 4), 30);
}

TEST(PlanStep, CallersShareBeforeTheirPrompts) {
  BatchPolicyOptions o;
  o.max_step_tokens = 90;
  o.min_prefill_rows = 8;
  // Caller 7 has three long prompts, caller 2 one: 45 rows each, caller 7's split 15 / 15 / 15.
  auto plan =
      PlanStep({Prompt(1000, 0, 7), Prompt(1000, 0, 7), Prompt(1000, 0, 2), Prompt(1000, 0, 7)}, o);
  EXPECT_EQ(RowsOf(plan, 2), 45);
  for (int i : {0, 1, 3}) EXPECT_EQ(RowsOf(plan, i), 15);
  // A caller that needs less than its share leaves the rest to the others.
  plan = PlanStep({Prompt(1000, 0, 7), Prompt(10, 0, 2), Prompt(1000, 0, 7)}, o);
  EXPECT_EQ(RowsOf(plan, 1), 10);
  EXPECT_EQ(RowsOf(plan, 0), 40);
  EXPECT_EQ(RowsOf(plan, 2), 40);
  // One caller: exactly the prompt-level sharing.
  plan = PlanStep({Prompt(1000), Prompt(10), Prompt(1000)}, o);
  EXPECT_EQ(RowsOf(plan, 1), 10);
  EXPECT_EQ(RowsOf(plan, 0) + RowsOf(plan, 2), 80);
}

TEST(PlanStep, PriorityComesBeforeCallers) {
  BatchPolicyOptions o;
  o.max_step_tokens = 64;
  o.min_prefill_rows = 8;
  auto plan = PlanStep({Prompt(1000, 0, 1), Prompt(1000, 1, 2), Prompt(1000, 0, 3)}, o);
  EXPECT_EQ(RowsOf(plan, 1), 64);
  EXPECT_EQ(RowsOf(plan, 0), 0);
  EXPECT_EQ(RowsOf(plan, 2), 0);
}

TEST(WaterFill, SharesSumToWhatIsThereAndFavourNone) {
  EXPECT_EQ(WaterFill({5, 100, 100}, 65), (std::vector<int>{5, 30, 30}));
  EXPECT_EQ(WaterFill({5, 100, 100}, 66), (std::vector<int>{5, 30, 31}));
  EXPECT_EQ(WaterFill({5, 10}, 100), (std::vector<int>{5, 10}));
  EXPECT_EQ(WaterFill({3, 3, 3}, 2), (std::vector<int>{1, 1, 0}));
  EXPECT_TRUE(WaterFill({}, 10).empty());
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
