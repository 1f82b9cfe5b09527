// Who goes first through the real scheduler: request priorities and callers, in admission and in
// a step's prefill rows (batch_policy_test.cc tests the plan alone).
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/serving/scheduler.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/collecting_sink.h"
#include "tests/engine/serving/forwarding_model.h"
#include "tests/engine/serving/scheduler_fixture.h"

namespace modrwkv {
namespace {

using SchedulerTest = testing_scheduler::SchedulerTest;

// Hears a request's finish and notes its name in a shared order.
class OrderSink : public StreamSink {
 public:
  OrderSink(std::string name, std::vector<std::string>* order, std::mutex* mu)
      : name_(std::move(name)), order_(order), mu_(mu) {}
  void OnTokens(TokenEvent) override {}
  void OnFinish(FinishEvent e) override {
    std::lock_guard<std::mutex> l(*mu_);
    EXPECT_EQ(e.reason, EndReason::kLength) << name_;
    order_->push_back(name_);
  }

 private:
  std::string name_;
  std::vector<std::string>* order_;
  std::mutex* mu_;
};

TEST_F(SchedulerTest, HigherPriorityIsAdmittedFirstAndEqualOnesInArrivalOrder) {
  auto model = MakeModel(1);
  SchedulerOptions o;
  o.max_running = 1;  // one at a time: the finish order is the admission order
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto blocker = std::make_shared<CollectingSink>();
  auto id = sched->Submit(Greedy(Prompt(4, 2), 1000000), blocker);
  ASSERT_TRUE(id.ok());
  while (blocker->tokens().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // All wait behind the blocker, which runs until cancelled below.
  std::mutex mu;
  std::vector<std::string> order;
  const std::vector<std::pair<std::string, int>> arrivals = {
      {"low", -1}, {"first zero", 0}, {"high", 5}, {"second zero", 0}, {"higher", 7}};
  for (const auto& [name, priority] : arrivals) {
    EngineRequest r = Greedy(Prompt(3, 1), 2);
    r.priority = priority;
    ASSERT_TRUE(sched->Submit(r, std::make_shared<OrderSink>(name, &order, &mu)).ok());
  }
  sched->Cancel(*id);
  EXPECT_EQ(blocker->Wait().reason, EndReason::kCancelled);
  for (int waited_ms = 0; waited_ms < 30000; ++waited_ms) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (order.size() == arrivals.size()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(order,
            (std::vector<std::string>{"higher", "high", "first zero", "second zero", "low"}));
}

// A model whose steps wait while it is held: requests submitted meanwhile reach the scheduler
// together, at the next loop iteration.
class HeldModel : public ForwardingModel {
 public:
  using ForwardingModel::ForwardingModel;
  absl::Status Step(absl::Span<const StepEntry> entries,
                    std::vector<StepResult>* results) override {
    std::unique_lock<std::mutex> l(mu_);
    waiting_ = held_;
    cv_.notify_all();
    cv_.wait(l, [&] { return !held_; });
    waiting_ = false;
    l.unlock();
    return ForwardingModel::Step(entries, results);
  }
  // Returns once a step waits: the scheduler thread is inside it, not reading its inbox.
  void Hold() {
    std::unique_lock<std::mutex> l(mu_);
    held_ = true;
    cv_.wait(l, [&] { return waiting_; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, waiting_ = false;
};

struct Arrival {
  std::string name, owner;
  int priority = 0;
  int prompt_rows = 3;
  int max_tokens = 2;
  int submit_after_ms = 0;  // waits this long (the model held) before submitting
};

// Starts a decoding blocker of `blocker_owner` (it holds one batch place for the whole run), then
// submits `arrivals` while the model is held, so that they wait together, and returns the order
// in which they finished.
std::vector<std::string> FinishOrder(std::unique_ptr<Model> inner, SchedulerOptions o,
                                     const std::vector<Arrival>& arrivals, const Tokenizer* tok,
                                     const std::string& blocker_owner = "a") {
  HeldModel model(std::move(inner));
  auto sched = Scheduler::Create(&model, tok, o).value();
  auto blocker = std::make_shared<CollectingSink>();
  EngineRequest b;
  b.prompt = {InputRows{{1, 2, 3}, {}}};
  b.sampling.temperature = 0;
  b.stop.max_tokens = 1000000;
  b.owner = blocker_owner;
  auto id = sched->Submit(b, blocker);
  EXPECT_TRUE(id.ok());
  while (blocker->tokens().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  model.Hold();
  std::mutex mu;
  std::vector<std::string> order;
  for (const Arrival& a : arrivals) {
    std::this_thread::sleep_for(std::chrono::milliseconds(a.submit_after_ms));
    EngineRequest r;
    r.prompt = {InputRows{std::vector<int32_t>(a.prompt_rows, 7), {}}};
    r.sampling.temperature = 0;
    r.stop.max_tokens = a.max_tokens;
    r.owner = a.owner;
    r.priority = a.priority;
    EXPECT_TRUE(sched->Submit(r, std::make_shared<OrderSink>(a.name, &order, &mu)).ok());
  }
  model.Release();
  for (int waited_ms = 0; waited_ms < 60000; ++waited_ms) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (order.size() == arrivals.size()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  sched->Cancel(*id);
  EXPECT_EQ(blocker->Wait().reason, EndReason::kCancelled);
  std::lock_guard<std::mutex> l(mu);
  return order;
}

TEST_F(SchedulerTest, TheCallerWithFewerSequencesInTheBatchIsAdmittedFirst) {
  // One place besides the blocker (caller "a"): requests run one at a time, so the finish order
  // is the admission order.
  SchedulerOptions o;
  o.max_running = 2;
  const std::vector<Arrival> arrivals = {{"a1", "a"}, {"a2", "a"}, {"a3", "a"},
                                         {"b1", "b"}, {"c1", "c"}, {"b2", "b"}};
  o.fair_callers = true;
  // "b" and "c" have nothing in the batch whenever a place frees, "a" always its blocker.
  EXPECT_EQ(FinishOrder(MakeModel(2), o, arrivals, tok_),
            (std::vector<std::string>{"b1", "c1", "b2", "a1", "a2", "a3"}));
  o.fair_callers = false;
  EXPECT_EQ(FinishOrder(MakeModel(2), o, arrivals, tok_),
            (std::vector<std::string>{"a1", "a2", "a3", "b1", "c1", "b2"}));
}

TEST_F(SchedulerTest, FairAdmissionKeepsPriorityFirst) {
  SchedulerOptions o;
  o.max_running = 2;
  o.fair_callers = true;
  const std::vector<Arrival> arrivals = {
      {"b low", "b", -1}, {"a high", "a", 3}, {"c low", "c", -1}};
  EXPECT_EQ(FinishOrder(MakeModel(2), o, arrivals, tok_),
            (std::vector<std::string>{"a high", "b low", "c low"}));
}

TEST_F(SchedulerTest, AHigherPriorityPromptTakesThePrefillRowsFirst) {
  // Both prompts run at once (three places); 63 prefill rows a step besides the blocker's token.
  // Shared, the shorter low prompt would finish first; by priority the high one does.
  SchedulerOptions o;
  o.max_running = 3;
  o.max_step_tokens = 64;
  const std::vector<Arrival> arrivals = {{"low", "b", 0, 500, 1}, {"high", "c", 5, 600, 1}};
  EXPECT_EQ(FinishOrder(MakeModel(3), o, arrivals, tok_),
            (std::vector<std::string>{"high", "low"}));
}

// With priority_aging a request counts one level higher for every aging interval it has waited:
// a low-priority request that arrived 400 ms (8 intervals of 50 ms) before a higher one by 3
// levels is admitted first; strict, the higher one is. The margin is in arrival times, so a slow
// machine that delays the admission delays both alike.
TEST_F(SchedulerTest, AgingAdmitsALowPriorityThatWaitedLongEnough) {
  SchedulerOptions o;
  o.max_running = 2;  // one place besides the blocker: finish order = admission order
  const std::vector<Arrival> arrivals = {{"old low", "b", -1},
                                         {"new high", "c", 2, 3, 2, /*submit_after_ms=*/400}};
  o.priority_aging = absl::Milliseconds(50);
  EXPECT_EQ(FinishOrder(MakeModel(2), o, arrivals, tok_),
            (std::vector<std::string>{"old low", "new high"}));
  o.priority_aging = absl::ZeroDuration();
  EXPECT_EQ(FinishOrder(MakeModel(2), o, arrivals, tok_),
            (std::vector<std::string>{"new high", "old low"}));
  // Aging is by time, not a bonus: arriving together, the higher priority still goes first.
  o.priority_aging = absl::Milliseconds(50);
  EXPECT_EQ(FinishOrder(MakeModel(2), o, {{"low", "b", -1}, {"high", "c", 2}}, tok_),
            (std::vector<std::string>{"high", "low"}));
}

// The same effective priority orders a step's prefill rows: the low prompt that arrived 600 ms
// (12 levels) earlier takes the rows before the high one (5 levels up) and finishes first, where
// strict priorities finish the high one first (AHigherPriorityPromptTakesThePrefillRowsFirst).
TEST_F(SchedulerTest, AgingGivesAnOlderLowPriorityPromptThePrefillRows) {
  SchedulerOptions o;
  o.max_running = 3;
  o.max_step_tokens = 64;
  o.priority_aging = absl::Milliseconds(50);
  const std::vector<Arrival> arrivals = {{"low", "b", 0, 600, 1},
                                         {"high", "c", 5, 500, 1, /*submit_after_ms=*/600}};
  EXPECT_EQ(FinishOrder(MakeModel(3), o, arrivals, tok_),
            (std::vector<std::string>{"low", "high"}));
  o.priority_aging = absl::ZeroDuration();
  EXPECT_EQ(FinishOrder(MakeModel(3), o, arrivals, tok_),
            (std::vector<std::string>{"high", "low"}));
}

TEST_F(SchedulerTest, PriorityAgingMustNotBeNegative) {
  SchedulerOptions o;
  o.priority_aging = absl::Milliseconds(-1);
  EXPECT_EQ(o.Validate(32).code(), absl::StatusCode::kInvalidArgument);
  o.priority_aging = absl::ZeroDuration();
  EXPECT_TRUE(o.Validate(32).ok());
}

TEST_F(SchedulerTest, CallersShareThePrefillRowsBeforeTheirPrompts) {
  // Caller "a" has two prompts, "b" one of the same length: "b" gets half of the rows rather
  // than a third, and finishes first; shared among prompts alike, all three finish in one step
  // (in admission order: fair admission puts b1 between a1 and a2).
  SchedulerOptions o;
  o.max_running = 4;
  o.max_step_tokens = 64;
  const std::vector<Arrival> arrivals = {
      {"a1", "a", 0, 600, 1}, {"a2", "a", 0, 600, 1}, {"b1", "b", 0, 600, 1}};
  o.fair_callers = true;
  EXPECT_EQ(FinishOrder(MakeModel(4), o, arrivals, tok_, "x"),
            (std::vector<std::string>{"b1", "a1", "a2"}));
  o.fair_callers = false;
  EXPECT_EQ(FinishOrder(MakeModel(4), o, arrivals, tok_, "x"),
            (std::vector<std::string>{"a1", "a2", "b1"}));
}

}  // namespace
}  // namespace modrwkv
