// The scheduler over a real (tiny, random-weight) CPU model: batching must not change results,
// sessions continue exactly, and every way a request can end frees what it held.
#include "engine/serving/scheduler.h"

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "engine/base/errors.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/loader/model_loader.h"
#include "engine/serving/state_blob.h"
#include "engine/text/utf8.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/await.h"
#include "tests/engine/serving/collecting_sink.h"
#include "tests/engine/serving/forwarding_model.h"
#include "tests/engine/serving/scheduler_fixture.h"
#include "tests/test_paths.h"

namespace modrwkv {
namespace {

// The scheduler publishes its stats at the end of a loop iteration, after the sinks heard the
// step's finishes: the slots in use once that has happened (polled for up to a second).
int SlotsUsedOnceSettled(const Scheduler& sched) {
  for (int i = 0; i < 200 && sched.stats().slots_used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return sched.stats().slots_used;
}

using SchedulerTest = testing_scheduler::SchedulerTest;

TEST_F(SchedulerTest, StreamsAndFinishesWithLength) {
  auto model = MakeModel(4);
  SchedulerOptions o;
  o.max_running = 4;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(9, 1), 7), sink).ok());
  FinishEvent f = sink->Wait();
  EXPECT_EQ(f.reason, EndReason::kLength);
  EXPECT_EQ(f.prompt_tokens, 9);
  EXPECT_EQ(f.generated_tokens, 7);
  EXPECT_EQ(sink->tokens(), Reference(Prompt(9, 1), 7));
  std::string bytes;
  for (int32_t t : sink->tokens()) bytes += tok_->TokenBytes(t);
  EXPECT_EQ(sink->text(), ReplaceInvalidUtf8(bytes));  // the stream's deltas, concatenated
  EXPECT_LT(f.time_to_first_token, absl::InfiniteDuration());
}

TEST_F(SchedulerTest, ConcurrentGreedyStreamsEqualAlone) {
  constexpr int kN = 64;
  auto model = MakeModel(kN);
  SchedulerOptions o;
  o.max_running = kN;
  o.max_step_tokens = 96;  // forces prefill chunks to interleave with decodes
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < kN; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(sched->Submit(Greedy(Prompt(5 + i % 40, i), 6), sinks.back()).ok());
  }
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(sinks[i]->Wait().reason, EndReason::kLength);
  }
  for (int i = 0; i < kN; i += 7) {  // a sample of them against the lone reference
    EXPECT_EQ(sinks[i]->tokens(), Reference(Prompt(5 + i % 40, i), 6)) << "request " << i;
  }
  EXPECT_EQ(SlotsUsedOnceSettled(*sched), 0);
}

// A hidden-state request generates nothing and hands back ln_out of its last prompt row, equal
// to the model's own kHidden output, while token streams run beside it; its slot is freed.
TEST_F(SchedulerTest, HiddenStateRequestsReturnTheLastRowAndFreeTheSlot) {
  const std::vector<int32_t> prompt = Prompt(300, 3);
  std::vector<float> want;
  {
    auto m = MakeModel(1);
    StepEntry e;
    e.slot = 0;
    e.inputs = {InputRowsView::Tokens(prompt)};
    e.output = StepOutput::kHidden;
    std::vector<StepResult> res;
    ASSERT_TRUE(m->Step({e}, &res).ok());
    want.assign(res[0].hidden.begin(), res[0].hidden.end());
  }
  auto model = MakeModel(3);
  SchedulerOptions o;
  o.max_running = 3;
  o.max_step_tokens = 64;  // the prompt spans several steps
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto text = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(9, 1), 20), text).ok());
  auto hidden = std::make_shared<CollectingSink>();
  EngineRequest r = Greedy(prompt, 5);
  r.output = RequestOutput::kHiddenState;
  ASSERT_TRUE(sched->Submit(std::move(r), hidden).ok());
  FinishEvent f = hidden->Wait();
  EXPECT_EQ(f.reason, EndReason::kLength);
  EXPECT_EQ(f.generated_tokens, 0);
  EXPECT_EQ(f.prompt_tokens, 300);
  EXPECT_TRUE(hidden->tokens().empty());
  EXPECT_EQ(f.hidden_state, want);  // bit for bit: the CPU engine is batch invariant
  EXPECT_EQ(text->Wait().reason, EndReason::kLength);
  EXPECT_EQ(text->tokens(), Reference(Prompt(9, 1), 20));
  EXPECT_EQ(SlotsUsedOnceSettled(*sched), 0);
}

TEST_F(SchedulerTest, CancelFreesTheSlot) {
  auto model = MakeModel(2);
  SchedulerOptions o;
  o.max_running = 2;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto sink = std::make_shared<CollectingSink>();
  auto id = sched->Submit(Greedy(Prompt(4, 2), 1000000), sink);
  ASSERT_TRUE(id.ok());
  while (sink->tokens().size() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  sched->Cancel(*id);
  EXPECT_EQ(sink->Wait().reason, EndReason::kCancelled);
  EXPECT_EQ(SlotsUsedOnceSettled(*sched), 0);
  EXPECT_EQ(sched->stats().running, 0);
}

TEST_F(SchedulerTest, DeadlineEndsTheRequest) {
  auto model = MakeModel(1);
  SchedulerOptions o;
  o.max_running = 1;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto sink = std::make_shared<CollectingSink>();
  EngineRequest r = Greedy(Prompt(4, 3), 1000000);
  r.deadline = absl::Now() + absl::Milliseconds(50);
  ASSERT_TRUE(sched->Submit(std::move(r), sink).ok());
  FinishEvent f = sink->Wait();
  EXPECT_EQ(f.reason, EndReason::kDeadline);
  EXPECT_GT(f.generated_tokens, 0);
}

TEST_F(SchedulerTest, OverloadIsResourceExhaustedAndRecovers) {
  auto model = MakeModel(1);
  SchedulerOptions o;
  o.max_running = 1;
  o.max_queued_requests = 2;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::vector<RequestId> ids;
  int rejected = 0;
  for (int i = 0; i < 10; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    auto id = sched->Submit(Greedy(Prompt(3, i), 200000), sinks.back());
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_EQ(ReasonOf(id.status()), reason::kQueueFull);
      ++rejected;
    } else {
      ids.push_back(*id);
    }
  }
  EXPECT_GE(rejected, 7);
  for (RequestId id : ids) sched->Cancel(id);
  auto sink = std::make_shared<CollectingSink>();
  // Recovers once the queue drains.
  absl::StatusOr<RequestId> again = absl::UnknownError("not tried");
  for (int i = 0; i < 200 && !again.ok(); ++i) {
    again = sched->Submit(Greedy(Prompt(3, 1), 2), sink);
    if (!again.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(sink->Wait().reason, EndReason::kLength);
}

TEST_F(SchedulerTest, DrainRefusesNewWorkAndFinishesRunning) {
  auto model = MakeModel(2);
  SchedulerOptions o;
  o.max_running = 2;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(4, 4), 20), sink).ok());
  sched->Drain();
  auto refused = sched->Submit(Greedy(Prompt(4, 4), 2), std::make_shared<CollectingSink>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(refused.status()), reason::kDraining);
  EXPECT_EQ(sink->Wait().reason, EndReason::kLength);
  EXPECT_EQ(sink->tokens().size(), 20u);
}

TEST_F(SchedulerTest, BadRequestsNameTheField) {
  auto model = MakeModel(1);
  SchedulerOptions o;
  o.max_running = 1;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto sink = std::make_shared<CollectingSink>();
  auto st = sched->Submit(Greedy({}, 5), sink).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("prompt is empty"), std::string::npos);
  st = sched->Submit(Greedy({1, 9999}, 5), sink).status();
  EXPECT_NE(st.message().find("token id 9999"), std::string::npos) << st;
  EngineRequest r = Greedy({1}, 5);
  r.sampling.top_p = 2;
  st = sched->Submit(r, sink).status();
  EXPECT_NE(st.message().find("top_p"), std::string::npos) << st;
  EXPECT_EQ(FieldOf(st), "top_p");
  r = Greedy({1}, 5);
  r.session = SessionId::Random();
  st = sched->Submit(r, sink).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(st), reason::kSessionNotFound);
  EXPECT_EQ(sink->finishes(), 0);  // refused requests never reach the sink
}

TEST_F(SchedulerTest, SessionTurnsContinueExactlyAcrossOffloadExportAndImport) {
  // Two slots and three sessions: sessions move to the cold tier and back between turns.
  auto model = MakeModel(2);
  SchedulerOptions o;
  o.max_running = 2;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  std::vector<SessionId> ids;
  for (int i = 0; i < 3; ++i) {
    auto info =
        Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("alice", done); });
    ASSERT_TRUE(info.ok());
    ids.push_back(info->id);
  }
  const std::vector<int32_t> a = Prompt(6, 7), b = Prompt(4, 8);
  std::vector<std::vector<int32_t>> first(3);
  for (int i = 0; i < 3; ++i) {
    auto sink = std::make_shared<CollectingSink>();
    EngineRequest r = Greedy(a, 5);
    r.session = ids[i];
    r.owner = "alice";
    ASSERT_TRUE(sched->Submit(r, sink).ok());
    sink->Wait();
    first[i] = sink->tokens();
  }
  // The whole conversation as one sequence: a, the 5 generated tokens, b.
  std::vector<int32_t> whole = a;
  whole.insert(whole.end(), first[0].begin(), first[0].end());
  whole.insert(whole.end(), b.begin(), b.end());
  const std::vector<int32_t> expected = Reference(whole, 4);

  // PooledSession 0: second turn directly (it was offloaded by sessions 1 and 2).
  auto sink = std::make_shared<CollectingSink>();
  EngineRequest r = Greedy(b, 4);
  r.session = ids[0];
  r.owner = "alice";
  ASSERT_TRUE(sched->Submit(r, sink).ok());
  sink->Wait();
  EXPECT_EQ(sink->tokens(), expected);

  // PooledSession 1: exported, imported into a second scheduler on another model instance.
  auto blob = Await<absl::StatusOr<std::string>>(
      [&](auto done) { sched->ExportSession(ids[1], "alice", done); });
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(Await<absl::StatusOr<std::string>>(
                [&](auto done) { sched->ExportSession(ids[1], "mallory", done); })
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  auto model2 = MakeModel(1);
  SchedulerOptions o2;
  o2.max_running = 1;
  auto sched2 = Scheduler::Create(model2.get(), tok_, o2).value();
  auto imported = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched2->ImportSession(*blob, "bob", done); });
  ASSERT_TRUE(imported.ok()) << imported.status();
  sink = std::make_shared<CollectingSink>();
  r.session = imported->id;
  r.owner = "bob";
  ASSERT_TRUE(sched2->Submit(r, sink).ok());
  sink->Wait();
  EXPECT_EQ(sink->tokens(), expected);

  // PooledSession 2: forked; both copies continue identically.
  auto fork = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->ForkSession(ids[2], "alice", done); });
  ASSERT_TRUE(fork.ok());
  for (SessionId id : {ids[2], fork->id}) {
    sink = std::make_shared<CollectingSink>();
    r.session = id;
    r.owner = "alice";
    ASSERT_TRUE(sched->Submit(r, sink).ok());
    sink->Wait();
    EXPECT_EQ(sink->tokens(), expected);
  }

  // Corrupt blobs are refused.
  std::string bad = *blob;
  bad[bad.size() / 2] ^= 1;
  EXPECT_EQ(Await<absl::StatusOr<SessionInfo>>(
                [&](auto done) { sched2->ImportSession(bad, "bob", done); })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      Await<absl::Status>([&](auto done) { sched->DeleteSession(ids[0], "alice", done); }).ok());
  EXPECT_EQ(Await<absl::StatusOr<SessionInfo>>(
                [&](auto done) { sched->GetSession(ids[0], "alice", done); })
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

// One turn on `session`, to its end; returns the tokens it generated.
std::vector<int32_t> RunTurn(Scheduler& sched, SessionId session, std::vector<int32_t> prompt,
                             int max_tokens, EndReason* reason = nullptr) {
  auto sink = std::make_shared<CollectingSink>();
  EngineRequest r;
  r.prompt = {InputRows{std::move(prompt), {}}};
  r.sampling.temperature = 0;
  r.stop.max_tokens = max_tokens;
  r.session = session;
  EXPECT_TRUE(sched.Submit(r, sink).ok());
  const EndReason why = sink->Wait().reason;
  if (reason) *reason = why;
  return sink->tokens();
}

// A turn on `session` with a 20,000-token prompt, cancelled during its prefill.
void CancelDuringPrefill(Scheduler& sched, SessionId session) {
  auto sink = std::make_shared<CollectingSink>();
  EngineRequest r;
  r.prompt = {InputRows{std::vector<int32_t>(20000, 42), {}}};
  r.stop.max_tokens = 3;
  r.session = session;
  auto id = sched.Submit(r, sink);
  ASSERT_TRUE(id.ok());
  sched.Cancel(*id);
  EXPECT_EQ(sink->Wait().reason, EndReason::kCancelled);
}

// With one slot a turn's start is kept in host memory; with three, in a spare slot (two
// sessions hot).
TEST_F(SchedulerTest, CancelledPrefillLeavesTheSessionExactlyAsItWas) {
  for (const int slots : {1, 3}) {
    SCOPED_TRACE(absl::StrCat(slots, " slots"));
    auto model = MakeModel(slots);
    SchedulerOptions o;
    o.max_running = 1;
    o.max_step_tokens = 2;  // a long prompt takes 10,000 steps: the cancel lands during its prefill
    auto sched = Scheduler::Create(model.get(), tok_, o).value();
    auto fresh =
        Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("", done); });
    auto used =
        Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("", done); });
    ASSERT_TRUE(fresh.ok() && used.ok());

    // A fresh session still holds the zero state: its next turn equals a fresh sequence.
    CancelDuringPrefill(*sched, fresh->id);
    EXPECT_EQ(RunTurn(*sched, fresh->id, Prompt(5, 10), 3), Reference(Prompt(5, 10), 3));

    // A used session keeps its state and its pending token (sampled by turn 1, not yet fed): the
    // turn after the cancelled one continues as if that one never happened.
    const std::vector<int32_t> turn1 = RunTurn(*sched, used->id, Prompt(5, 1), 3);
    CancelDuringPrefill(*sched, used->id);
    std::vector<int32_t> whole = Prompt(5, 1);
    whole.insert(whole.end(), turn1.begin(), turn1.end());  // the last one was the pending token
    const std::vector<int32_t> p3 = Prompt(4, 3);
    whole.insert(whole.end(), p3.begin(), p3.end());
    EXPECT_EQ(RunTurn(*sched, used->id, p3, 3), Reference(whole, 3));
  }
}

TEST_F(SchedulerTest, QueuedPromptTokenCountReturnsToZeroAfterSessionTurns) {
  auto model = MakeModel(2);
  SchedulerOptions o;
  o.max_running = 2;
  o.max_queued_prompt_tokens = 10;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto info =
      Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("", done); });
  ASSERT_TRUE(info.ok());
  for (int turn = 0; turn < 5; ++turn) {  // turns 2..5 each start with a pending token
    auto sink = std::make_shared<CollectingSink>();
    EngineRequest r = Greedy(Prompt(3, turn), 2);
    r.session = info->id;
    ASSERT_TRUE(sched->Submit(r, sink).ok());
    sink->Wait();
  }
  // Stats are published after each loop iteration; the finish is seen a moment before.
  for (int i = 0; i < 200 && sched->stats().running > 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(sched->stats().queued_prompt_tokens, 0);
  // The bound still means what it says: 11 prompt tokens never fit under 10.
  auto sink = std::make_shared<CollectingSink>();
  EXPECT_EQ(sched->Submit(Greedy(Prompt(11, 9), 1), sink).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(SchedulerTest, ShutdownFinishesEveryRequestAndAnswersEveryCommand) {
  for (int round = 0; round < 20; ++round) {
    auto model = MakeModel(2);
    SchedulerOptions o;
    o.max_running = 2;
    auto sched = Scheduler::Create(model.get(), tok_, o).value();
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < 8; ++i) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(sched->Submit(Greedy(Prompt(50, i), 50), sinks.back()).ok());
    }
    std::atomic<int> answered{0};
    for (int i = 0; i < 8; ++i) {
      sched->CreateSession("", [&](absl::StatusOr<SessionInfo>) { answered.fetch_add(1); });
    }
    sched.reset();  // at once: requests in the inbox, commands in the queue
    EXPECT_EQ(answered.load(), 8) << "round " << round;
    for (auto& s : sinks) EXPECT_EQ(s->finishes(), 1) << "round " << round;
  }
}

// A model that fails its next Step on request: tagged with one entry (nothing ran), untagged, or
// for good (a device whose context is lost: every later step fails, Health says why).
class FailingModel : public ForwardingModel {
 public:
  using ForwardingModel::ForwardingModel;
  absl::Status Step(absl::Span<const StepEntry> entries,
                    std::vector<StepResult>* results) override {
    // A tagged failure waits for a step that has its entry.
    const int fail = fail_entry_.load();
    if (fail == -3 || broken_) {
      broken_ = true;
      return absl::InternalError("illegal address (sticky, internal detail)");
    }
    if (fail == -1) {
      fail_entry_ = -2;
      return absl::DataLossError("device fell off the bus (internal detail)");
    }
    if (fail >= 0 && static_cast<size_t>(fail) < entries.size()) {
      fail_entry_ = -2;
      return WithStepEntry(absl::InvalidArgumentError("bad entry (internal detail)"), fail);
    }
    return ForwardingModel::Step(entries, results);
  }
  absl::Status CopySlot(int src, int dst) override {
    return fail_slot_writes_ ? absl::InternalError("copy failed")
                             : ForwardingModel::CopySlot(src, dst);
  }
  absl::Status WriteSlot(int slot, absl::Span<const float> in) override {
    return fail_slot_writes_ ? absl::InternalError("write failed")
                             : ForwardingModel::WriteSlot(slot, in);
  }
  absl::Status Health() const override {
    return broken_ ? absl::InternalError("illegal address (sticky)") : absl::OkStatus();
  }
  std::atomic<int> fail_entry_{-2};  // -2 none, -1 untagged, -3 for good, >= 0 that entry
  std::atomic<bool> broken_{false};
  std::atomic<bool> fail_slot_writes_{false};  // CopySlot and WriteSlot fail
};

class RecordingObserver : public SchedulerObserver {
 public:
  void OnStepError(const absl::Status& st) override {
    std::lock_guard<std::mutex> l(mu);
    errors.push_back(st);
  }
  void OnEngineFailed(const absl::Status& st) override {
    std::lock_guard<std::mutex> l(mu);
    engine_failures.push_back(st);
  }
  void OnAdmissionRejected(std::string_view reason) override {
    std::lock_guard<std::mutex> l(mu);
    rejections.emplace_back(reason);
  }
  void OnInitialStateStart(std::string_view name) override {
    std::lock_guard<std::mutex> l(mu);
    initial_state_starts.emplace_back(name);
  }
  std::mutex mu;
  std::vector<absl::Status> errors, engine_failures;
  std::vector<std::string> rejections, initial_state_starts;
};

TEST_F(SchedulerTest, AStepErrorIsInternalForClientsAndFailsOnlyTheEntryItNames) {
  FailingModel model(MakeModel(2));
  RecordingObserver obs;
  SchedulerOptions o;
  o.max_running = 2;
  o.max_step_tokens = 4;
  // The failure waits for the first step with two entries: `a` decodes for 2,000 steps, so `b`
  // joins it whatever the timing, and decodes come first in a step: entry 1 is b's prefill.
  model.fail_entry_ = 1;
  auto sched = Scheduler::Create(&model, tok_, o, &obs).value();
  auto a = std::make_shared<CollectingSink>(), b = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 1), 2000), a).ok());
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 2), 4), b).ok());
  FinishEvent fa = a->Wait(), fb = b->Wait();
  ASSERT_EQ(fb.reason, EndReason::kError);
  EXPECT_EQ(fb.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(fb.status.message().find("internal detail"), std::string::npos);
  EXPECT_EQ(fa.reason, EndReason::kLength);  // and its stream is exactly what it would be alone
  EXPECT_EQ(a->tokens(), Reference(Prompt(2, 1), 2000));
  {
    std::lock_guard<std::mutex> l(obs.mu);
    ASSERT_EQ(obs.errors.size(), 1u);
    EXPECT_NE(obs.errors[0].message().find("internal detail"), std::string::npos);
  }

  // Untagged: the step's state is unknown, so every request in it fails.
  auto c = std::make_shared<CollectingSink>(), d = std::make_shared<CollectingSink>();
  model.fail_entry_ = -1;
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 3), 4), c).ok());
  FinishEvent fc = c->Wait();
  EXPECT_EQ(fc.reason, EndReason::kError);
  EXPECT_EQ(fc.status.code(), absl::StatusCode::kInternal);
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 4), 4), d).ok());  // and the server goes on
  EXPECT_EQ(d->Wait().reason, EndReason::kLength);
}

// A backend that fails for good (Model::Health): the requests in the step, those waiting for a
// slot and those still in the inbox all end with UNAVAILABLE ENGINE_FAILED or INTERNAL, new ones
// are refused at once, and the observer hears it once (the server turns readiness off).
TEST_F(SchedulerTest, ABackendThatFailsForGoodEndsEverythingAndRefusesNewWork) {
  FailingModel model(MakeModel(1));
  RecordingObserver obs;
  SchedulerOptions o;
  o.max_running = 1;
  auto sched = Scheduler::Create(&model, tok_, o, &obs).value();
  auto running = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 1), 100000), running).ok());
  while (running->tokens().size() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // One slot: these wait behind the running request.
  std::vector<std::shared_ptr<CollectingSink>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(sched->Submit(Greedy(Prompt(2, 2 + i), 4), waiting.back()).ok());
  }
  model.fail_entry_ = -3;
  const FinishEvent f = running->Wait();
  EXPECT_EQ(f.reason, EndReason::kError);
  EXPECT_EQ(f.status.message().find("internal detail"), std::string::npos);
  for (auto& w : waiting) {
    const FinishEvent fw = w->Wait();
    EXPECT_EQ(fw.reason, EndReason::kError);
    EXPECT_EQ(fw.status.code(), absl::StatusCode::kUnavailable) << fw.status;
    EXPECT_EQ(ReasonOf(fw.status), reason::kEngineFailed);
  }
  auto late = std::make_shared<CollectingSink>();
  const absl::StatusOr<RequestId> refused = sched->Submit(Greedy(Prompt(2, 9), 4), late);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(refused.status()), reason::kEngineFailed);
  std::lock_guard<std::mutex> l(obs.mu);
  ASSERT_EQ(obs.engine_failures.size(), 1u);
  EXPECT_NE(obs.engine_failures[0].message().find("sticky"), std::string::npos);
  EXPECT_EQ(obs.rejections, std::vector<std::string>{"engine_failed"});
}

// A turn that fails when even its undo fails (the device failing between steps) must not leave
// half a prompt in the session unnoticed: the session is lost, and what would run on it or read
// it is refused with DATA_LOSS (SESSION_LOST) naming it, until it is deleted.
TEST_F(SchedulerTest, ASessionWhoseFailedTurnCannotBeUndoneIsRefusedUntilDeleted) {
  FailingModel model(MakeModel(2));
  SchedulerOptions o;
  o.max_running = 1;
  auto sched = Scheduler::Create(&model, tok_, o).value();
  auto info =
      Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("", done); });
  ASSERT_TRUE(info.ok());
  RunTurn(*sched, info->id, Prompt(5, 1), 3);  // a state worth keeping

  model.fail_slot_writes_ = true;
  model.fail_entry_ = -1;  // the next step fails, and so does the turn's undo
  EndReason why = EndReason::kLength;
  RunTurn(*sched, info->id, Prompt(5, 2), 3, &why);
  EXPECT_EQ(why, EndReason::kError);
  model.fail_slot_writes_ = false;

  auto sink = std::make_shared<CollectingSink>();
  EngineRequest r;
  r.prompt = {InputRows{Prompt(5, 3), {}}};
  r.stop.max_tokens = 3;
  r.session = info->id;
  ASSERT_TRUE(sched->Submit(r, sink).ok());
  const FinishEvent turn = sink->Wait();
  EXPECT_EQ(turn.reason, EndReason::kError);
  EXPECT_EQ(turn.status.code(), absl::StatusCode::kDataLoss) << turn.status;
  EXPECT_EQ(ReasonOf(turn.status), reason::kSessionLost);
  EXPECT_NE(turn.status.message().find(info->id.ToString()), std::string::npos);
  auto blob = Await<absl::StatusOr<std::string>>(
      [&](auto done) { sched->ExportSession(info->id, "", done); });
  EXPECT_EQ(blob.status().code(), absl::StatusCode::kDataLoss);
  auto fork = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->ForkSession(info->id, "", done); });
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(
      Await<absl::Status>([&](auto done) { sched->DeleteSession(info->id, "", done); }).ok());
  // Other sessions and requests are unaffected.
  EXPECT_EQ(RunTurn(*sched, Await<absl::StatusOr<SessionInfo>>([&](auto done) {
                              sched->CreateSession("", done);
                            })->id,
                    Prompt(5, 4), 3),
            Reference(Prompt(5, 4), 3));
}

TEST_F(SchedulerTest, EmbeddingRowsEqualTheirTokensAcrossStepsAndMixedWithTokens) {
  // Embedding rows stand in for emb[token]: a prompt given as tokens, then the embedding rows of
  // some tokens, then tokens again, split across many small steps, equals the all-token prompt.
  auto model = MakeModel(2);
  SchedulerOptions o;
  o.max_running = 2;
  o.max_step_tokens = 3;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  const OwnedTensor* emb = nullptr;
  for (const OwnedTensor& t : *tensors_) {
    if (t.name == "emb.weight") emb = &t;
  }
  ASSERT_NE(emb, nullptr);
  const int C = model->config().n_embd;
  const std::vector<int32_t> all = Prompt(11, 4);
  EngineRequest r = Greedy({}, 5);
  r.prompt.clear();
  r.prompt.push_back(InputRows{{all.begin(), all.begin() + 2}, {}});
  InputRows rows;
  for (int i = 2; i < 9; ++i) {
    ASSERT_EQ(emb->dtype, DType::kF32);
    const float* e =
        reinterpret_cast<const float*>(emb->bytes.data()) + static_cast<size_t>(all[i]) * C;
    rows.embeddings.insert(rows.embeddings.end(), e, e + C);
  }
  r.prompt.push_back(std::move(rows));
  r.prompt.push_back(InputRows{{all.begin() + 9, all.end()}, {}});
  auto sink = std::make_shared<CollectingSink>();
  auto other = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(r, sink).ok());
  ASSERT_TRUE(sched->Submit(Greedy(Prompt(7, 5), 6), other).ok());  // shares the steps
  EXPECT_EQ(sink->Wait().prompt_tokens, 11);
  EXPECT_EQ(sink->tokens(), Reference(all, 5));
  other->Wait();
  EXPECT_EQ(other->tokens(), Reference(Prompt(7, 5), 6));
}

TEST_F(SchedulerTest, ImportRefusesNonFiniteStates) {
  auto model = MakeModel(1);
  SchedulerOptions o;
  o.max_running = 1;
  auto sched = Scheduler::Create(model.get(), tok_, o).value();
  auto info =
      Await<absl::StatusOr<SessionInfo>>([&](auto done) { sched->CreateSession("", done); });
  ASSERT_TRUE(info.ok());
  auto blob = Await<absl::StatusOr<std::string>>(
      [&](auto done) { sched->ExportSession(info->id, "", done); });
  ASSERT_TRUE(blob.ok());
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> state(model->config().StateFloats(), 0.0f);
    state[state.size() / 3] = bad;
    StateBlobHeader h;
    h.model_fingerprint = model->info().fingerprint;
    h.n_layer = model->config().n_layer;
    h.n_embd = model->config().n_embd;
    h.head_size = model->config().head_size;
    auto st = Await<absl::StatusOr<SessionInfo>>(
        [&](auto done) { sched->ImportSession(EncodeStateBlob(h, state), "", done); });
    EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.status().message().find("non-finite"), std::string::npos) << st.status();
  }
}

}  // namespace
}  // namespace modrwkv

namespace modrwkv {
namespace {

// A trained initial state stands in for the zero state: a request that names it, in a batch with
// zero-start requests, and a session created from it continue exactly as the model started from
// it alone; a request on a session cannot name one.
TEST_F(SchedulerTest, InitialStatesStartRequestsAndSessionsFromTheirState) {
  auto model = MakeModel(4);
  const ModelConfig& c = model->config();
  auto initial = std::make_shared<InitialState>();
  initial->name = "persona";
  initial->state.assign(c.StateFloats(), 0.0f);
  // Seeded: an unseeded draw now and then left the greedy stream unchanged.
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int l = 0; l < c.n_layer; ++l) {
    float* wkv = initial->state.data() + l * c.StateFloatsPerLayer() + c.n_embd;
    for (int i = 0; i < c.n_head * 64 * 64; ++i) wkv[i] = normal(gen);
  }
  const std::vector<int32_t> prompt = Prompt(7, 4);
  const std::vector<int32_t> want = Reference(prompt, 8, initial.get());
  ASSERT_NE(want, Reference(prompt, 8)) << "the state must change the stream for this test";

  SchedulerOptions o;
  o.max_running = 4;
  RecordingObserver obs;
  auto sched = Scheduler::Create(model.get(), tok_, o, &obs).value();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    EngineRequest r = Greedy(prompt, 8);
    if (i % 2 == 1) r.initial_state = initial;
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(sched->Submit(r, sinks.back()).ok());
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(sinks[i]->Wait().reason, EndReason::kLength);
    EXPECT_EQ(sinks[i]->tokens(), i % 2 == 1 ? want : Reference(prompt, 8)) << "request " << i;
  }

  auto info = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->CreateSession("bob", done, initial); });
  ASSERT_TRUE(info.ok()) << info.status();
  EngineRequest turn = Greedy(prompt, 8);
  turn.session = info->id;
  turn.owner = "bob";
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(turn, sink).ok());
  sink->Wait();
  EXPECT_EQ(sink->tokens(), want);
  {  // the two requests and the session (not the session's turn, nor the zero-started requests)
    std::lock_guard<std::mutex> l(obs.mu);
    EXPECT_EQ(obs.initial_state_starts, std::vector<std::string>(3, "persona"));
  }

  turn.initial_state = initial;
  absl::Status st = sched->Submit(turn, sink).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("initial_state"), std::string::npos) << st;
  auto short_state = std::make_shared<InitialState>(*initial);
  short_state->state.pop_back();
  EngineRequest r = Greedy(prompt, 8);
  r.initial_state = short_state;
  st = sched->Submit(r, sink).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("initial_state persona"), std::string::npos) << st;
  info = Await<absl::StatusOr<SessionInfo>>(
      [&](auto done) { sched->CreateSession("bob", done, short_state); });
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  const absl::Status deleted = Await<absl::Status>(
      [&](auto done) { sched->DeleteSession(turn.session.value(), "bob", done); });
  EXPECT_TRUE(deleted.ok()) << deleted;
  EXPECT_EQ(SlotsUsedOnceSettled(*sched), 0);
}

}  // namespace
}  // namespace modrwkv
