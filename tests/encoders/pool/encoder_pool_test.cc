// Tests of the encoder worker pool with a fake encoder: ordering, batching across jobs, admission,
// cancellation, failure isolation, the cache, shutdown, worker priority, and a stress run (also
// run under TSan). Deterministic: batches are held with a gate, never with sleeps.
#include "encoders/pool/encoder_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/encoders/pool/fake_item_encoder.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::CurrentNice;
using ::modrwkv::encoders::testing::FakeItemEncoder;
using ::modrwkv::encoders::testing::FakeRows;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// One job's outcome: counts `done` calls and keeps the last result.
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  std::optional<EncoderPool::Result> result;
  std::thread::id thread;

  EncoderPool::Done Callback() {
    return [this](EncoderPool::Result r) {
      std::lock_guard<std::mutex> l(mu);
      ++calls;
      result = std::move(r);
      thread = std::this_thread::get_id();
      cv.notify_all();
    };
  }
  const EncoderPool::Result& Wait() {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return calls > 0; });
    return *result;
  }
  int Calls() {
    std::lock_guard<std::mutex> l(mu);
    return calls;
  }
};

class RecordingObserver : public EncoderPoolObserver {
 public:
  void OnQueueDepth(int items) override {
    std::lock_guard<std::mutex> l(mu_);
    last_depth_ = items;
  }
  void OnBatch(int items, absl::Duration encode_time) override {
    std::lock_guard<std::mutex> l(mu_);
    batches_.push_back(items);
    EXPECT_GE(encode_time, absl::ZeroDuration());
  }
  void OnCacheLookup(bool hit) override {
    std::lock_guard<std::mutex> l(mu_);
    ++(hit ? hits_ : misses_);
  }
  void OnItemRows(int rows) override {
    std::lock_guard<std::mutex> l(mu_);
    rows_.push_back(rows);
  }
  std::vector<int> batches() {
    std::lock_guard<std::mutex> l(mu_);
    return batches_;
  }
  int last_depth() {
    std::lock_guard<std::mutex> l(mu_);
    return last_depth_;
  }
  int hits() {
    std::lock_guard<std::mutex> l(mu_);
    return hits_;
  }
  int misses() {
    std::lock_guard<std::mutex> l(mu_);
    return misses_;
  }

 private:
  std::mutex mu_;
  int last_depth_ = -1, hits_ = 0, misses_ = 0;
  std::vector<int> batches_, rows_;
};

MediaItem Item(std::string bytes, std::string field = "") {
  return MediaItem{std::make_shared<const std::string>(std::move(bytes)), std::move(field), ""};
}

std::vector<MediaItem> Items(std::initializer_list<std::string> bytes) {
  std::vector<MediaItem> items;
  int i = 0;
  for (const std::string& b : bytes)
    items.push_back(Item(b, absl::StrCat("input[", i++, "].image")));
  return items;
}

// The result holds FakeRows(bytes[i]) for every item, in order.
void ExpectRows(const EncoderPool::Result& r, const std::vector<std::string>& bytes) {
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_NE((*r)[i], nullptr) << i;
    EmbeddingRows want = FakeRows(bytes[i]);
    EXPECT_EQ((*r)[i]->rows, want.rows) << i;
    EXPECT_EQ((*r)[i]->dim, want.dim) << i;
    EXPECT_EQ((*r)[i]->data, want.data) << i;
  }
}

struct Fixture {
  explicit Fixture(EncoderPoolOptions options) {
    encoder = std::make_shared<FakeItemEncoder>();
    auto p = EncoderPool::Create(encoder, options, &observer);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) pool = *std::move(p);
  }
  std::shared_ptr<FakeItemEncoder> encoder;
  RecordingObserver observer;
  std::unique_ptr<EncoderPool> pool;
};

EncoderPoolOptions NoCache() {
  EncoderPoolOptions o;
  o.cache_bytes = 0;
  return o;
}

TEST(EncoderPoolOptionsTest, Validate) {
  EXPECT_TRUE(EncoderPoolOptions().Validate().ok());
  auto bad = [](auto edit) {
    EncoderPoolOptions o;
    edit(o);
    return o.Validate();
  };
  EXPECT_THAT(bad([](auto& o) { o.workers = 0; }).message(), HasSubstr("workers"));
  EXPECT_THAT(bad([](auto& o) { o.threads_per_worker = 0; }).message(),
              HasSubstr("threads_per_worker"));
  EXPECT_THAT(bad([](auto& o) { o.max_queued_items = 0; }).message(),
              HasSubstr("encoder-queue-items"));
  EXPECT_THAT(bad([](auto& o) { o.max_batch = 0; }).message(), HasSubstr("max_batch"));
  EXPECT_THAT(bad([](auto& o) { o.cache_bytes = -1; }).message(), HasSubstr("cache_bytes"));
  EXPECT_THAT(bad([](auto& o) { o.nice = -5; }).message(), HasSubstr("nice"));
  EXPECT_THAT(bad([](auto& o) { o.nice = 20; }).message(), HasSubstr("nice"));
  EncoderPoolOptions zero_workers;
  zero_workers.workers = 0;
  EXPECT_EQ(EncoderPool::Create(std::make_shared<FakeItemEncoder>(), zero_workers, nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EncoderPoolTest, RowsOfEveryItemInOrder) {
  EncoderPoolOptions o = NoCache();
  o.workers = 2;
  o.max_batch = 2;  // the job spans several batches, possibly on both workers
  Fixture f(o);
  std::vector<std::string> bytes = {"first", "second image", "3", "fourth!", "fifth"};
  Outcome out;
  std::vector<MediaItem> items;
  for (const auto& b : bytes) items.push_back(Item(b));
  ASSERT_TRUE(f.pool->Submit(std::move(items), out.Callback()).ok());
  ExpectRows(out.Wait(), bytes);
  EXPECT_NE(out.thread, std::this_thread::get_id());
  f.pool.reset();
  EXPECT_EQ(out.Calls(), 1);
}

TEST(EncoderPoolTest, BatchesAcrossJobs) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_batch = 8;
  Fixture f(o);
  f.encoder->Close();
  Outcome a, b, c, d;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), a.Callback()).ok());
  f.encoder->WaitBatches(1);  // the worker holds "held"; the next jobs queue up
  ASSERT_TRUE(f.pool->Submit(Items({"b1", "b2"}), b.Callback()).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"c1"}), c.Callback()).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"d1", "d2", "d3"}), d.Callback()).ok());
  EXPECT_EQ(f.pool->queued_items(), 6);
  EXPECT_EQ(f.observer.last_depth(), 6);
  f.encoder->Open();
  ExpectRows(a.Wait(), {"held"});
  ExpectRows(b.Wait(), {"b1", "b2"});
  ExpectRows(c.Wait(), {"c1"});
  ExpectRows(d.Wait(), {"d1", "d2", "d3"});
  f.pool.reset();  // joins: the observer has seen both batches
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1, 6));
  EXPECT_THAT(f.observer.batches(), ElementsAre(1, 6));
  EXPECT_EQ(f.observer.last_depth(), 0);
}

TEST(EncoderPoolTest, HigherPriorityJobsAreEncodedFirstAndEqualOnesInArrivalOrder) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_batch = 3;
  Fixture f(o);
  f.encoder->Close();
  Outcome held, a, b, c, d, e;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), held.Callback(), 5).ok());
  f.encoder->WaitBatches(1);  // a batch in progress is never pre-empted
  ASSERT_TRUE(f.pool->Submit(Items({"a1", "a2"}), a.Callback(), 0).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"b1"}), b.Callback(), -5).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"c1", "c2"}), c.Callback(), 5).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"d1"}), d.Callback(), 0).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"e1"}), e.Callback(), 10).ok());
  f.encoder->Open();
  ExpectRows(b.Wait(), {"b1"});  // the last
  ExpectRows(a.Wait(), {"a1", "a2"});
  ExpectRows(c.Wait(), {"c1", "c2"});
  ExpectRows(d.Wait(), {"d1"});
  ExpectRows(e.Wait(), {"e1"});
  EXPECT_THAT(f.encoder->encoded(), ElementsAre("held", "e1", "c1", "c2", "a1", "a2", "d1", "b1"));
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1, 3, 3, 1));
}

TEST(EncoderPoolTest, CallersOfEqualPriorityTakeTurns) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_batch = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome held, a1, a2, a3, b1, c1, b2, high;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), held.Callback()).ok());
  f.encoder->WaitBatches(1);
  ASSERT_TRUE(f.pool->Submit(Items({"a1"}), a1.Callback(), 0, "a").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"a2"}), a2.Callback(), 0, "a").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"a3x", "a3y"}), a3.Callback(), 0, "a").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"b1"}), b1.Callback(), 0, "b").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"c1"}), c1.Callback(), 0, "c").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"b2"}), b2.Callback(), 0, "b").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"high"}), high.Callback(), 1, "a").ok());  // priority first
  f.encoder->Open();
  for (Outcome* out : {&held, &a1, &a2, &a3, &b1, &c1, &b2, &high}) ASSERT_TRUE(out->Wait().ok());
  // Round 0: a1 b1 c1 (arrival order), round 1: a2 b2, round 2: a3 (its items together).
  EXPECT_THAT(f.encoder->encoded(),
              ElementsAre("held", "high", "a1", "b1", "c1", "a2", "b2", "a3x", "a3y"));
  // Turns do not pile up while a caller is away: one whose last turn is long past (c, round 0)
  // comes back at the current round (2), after those queued there before it (b3), and a caller
  // that just had its turn (a, round 2) waits for the next.
  f.encoder->Close();
  Outcome held2, a4, b3, c2;
  ASSERT_TRUE(f.pool->Submit(Items({"held2"}), held2.Callback(), 0, "d").ok());
  f.encoder->WaitBatches(10);
  ASSERT_TRUE(f.pool->Submit(Items({"a4"}), a4.Callback(), 0, "a").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"b3"}), b3.Callback(), 0, "b").ok());
  ASSERT_TRUE(f.pool->Submit(Items({"c2"}), c2.Callback(), 0, "c").ok());
  f.encoder->Open();
  for (Outcome* out : {&held2, &a4, &b3, &c2}) ASSERT_TRUE(out->Wait().ok());
  EXPECT_THAT(f.encoder->encoded(), ElementsAre("held", "high", "a1", "b1", "c1", "a2", "b2", "a3x",
                                                "a3y", "held2", "b3", "c2", "a4"));
}

TEST(EncoderPoolTest, MaxBatchSplitsTheQueue) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_batch = 3;
  Fixture f(o);
  f.encoder->Close();
  Outcome a, b;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), a.Callback()).ok());
  f.encoder->WaitBatches(1);
  ASSERT_TRUE(f.pool->Submit(Items({"1", "2", "3", "4", "5"}), b.Callback()).ok());
  f.encoder->Open();
  ExpectRows(b.Wait(), {"1", "2", "3", "4", "5"});
  a.Wait();
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1, 3, 2));
}

TEST(EncoderPoolTest, Admission) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_queued_items = 4;
  Fixture f(o);
  f.encoder->Close();
  Outcome a, b, refused, oversized;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), a.Callback()).ok());
  f.encoder->WaitBatches(1);  // in a batch: no longer counts against the queue
  EXPECT_EQ(f.pool->queued_items(), 0);
  ASSERT_TRUE(f.pool->Submit(Items({"b1", "b2", "b3"}), b.Callback()).ok());
  EXPECT_EQ(f.pool->queued_items(), 3);

  absl::StatusOr<JobId> full = f.pool->Submit(Items({"c1", "c2"}), refused.Callback());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("encoder-queue-items"));
  // A job that fits exactly is still accepted later; one that can never fit is the caller's error.
  absl::StatusOr<JobId> never =
      f.pool->Submit(Items({"1", "2", "3", "4", "5"}), oversized.Callback());
  EXPECT_EQ(never.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(never.status().message(), HasSubstr("encoder-queue-items = 4"));
  EXPECT_EQ(f.pool->Submit({}, oversized.Callback()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.pool->Submit(Items({"x"}), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<MediaItem> no_bytes = {Item("x"), MediaItem{nullptr, "input[1].image", ""}};
  absl::StatusOr<JobId> empty_item = f.pool->Submit(std::move(no_bytes), oversized.Callback());
  EXPECT_EQ(empty_item.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty_item.status().message()), StartsWith("input[1].image: "));
  EXPECT_EQ(f.pool->queued_items(), 3);

  f.encoder->Open();
  a.Wait();
  b.Wait();
  EXPECT_EQ(f.pool->queued_items(), 0);
  Outcome c;  // room again
  ASSERT_TRUE(f.pool->Submit(Items({"c1", "c2", "c3", "c4"}), c.Callback()).ok());
  ExpectRows(c.Wait(), {"c1", "c2", "c3", "c4"});
  f.pool.reset();
  EXPECT_EQ(refused.Calls(), 0);
  EXPECT_EQ(oversized.Calls(), 0);
  EXPECT_EQ(f.observer.last_depth(), 0);
}

TEST(EncoderPoolTest, CancelQueuedJob) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome a, b;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), a.Callback()).ok());
  f.encoder->WaitBatches(1);
  absl::StatusOr<JobId> id = f.pool->Submit(Items({"b1", "b2"}), b.Callback());
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(f.pool->queued_items(), 2);
  f.pool->Cancel(*id);
  EXPECT_EQ(f.pool->queued_items(), 0);
  EXPECT_EQ(f.observer.last_depth(), 0);
  // Completed at once (the batch is still held), on the pool's delivery thread.
  EXPECT_EQ(b.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_NE(b.thread, std::this_thread::get_id());
  f.pool->Cancel(*id);        // already finished: no effect
  f.pool->Cancel(*id + 100);  // unknown: no effect
  f.encoder->Open();
  ExpectRows(a.Wait(), {"held"});
  f.pool.reset();
  EXPECT_EQ(b.Calls(), 1);
  EXPECT_EQ(a.Calls(), 1);
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1));  // b's items were never encoded
}

TEST(EncoderPoolTest, CancelInFlightJobCompletesAfterTheBatch) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  o.max_batch = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome a;
  absl::StatusOr<JobId> id = f.pool->Submit(Items({"a1", "a2"}), a.Callback());
  ASSERT_TRUE(id.ok());
  f.encoder->WaitBatches(1);  // a1 in a batch, a2 queued
  EXPECT_EQ(f.pool->queued_items(), 1);
  f.pool->Cancel(*id);
  EXPECT_EQ(f.pool->queued_items(), 0);
  EXPECT_EQ(a.Calls(), 0);  // the batch still holds a1
  f.encoder->Open();
  EXPECT_EQ(a.Wait().status().code(), absl::StatusCode::kCancelled);
  f.pool.reset();
  EXPECT_EQ(a.Calls(), 1);
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1));  // a2 was dropped
}

TEST(EncoderPoolTest, ItemFailureFailsOnlyItsJob) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome held, b, c;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), held.Callback()).ok());
  f.encoder->WaitBatches(1);
  ASSERT_TRUE(f.pool->Submit(Items({"ok1", "bad bytes", "ok2"}), b.Callback()).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"ok3"}), c.Callback()).ok());
  f.encoder->Open();
  const EncoderPool::Result& rb = b.Wait();
  EXPECT_EQ(rb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rb.status().message()), StartsWith("input[1].image: "));
  EXPECT_THAT(rb.status().message(), HasSubstr("cannot decode"));
  ExpectRows(c.Wait(), {"ok3"});
  held.Wait();
  f.pool.reset();
  EXPECT_EQ(b.Calls(), 1);
  // The failed job's other items were not encoded: the second batch held only ok3.
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1, 1));
  EXPECT_THAT(f.observer.batches(), ElementsAre(1, 4));
}

TEST(EncoderPoolTest, BatchFailureFailsEveryJobInTheBatch) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome held, b, c, d;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), held.Callback()).ok());
  f.encoder->WaitBatches(1);
  ASSERT_TRUE(f.pool->Submit(Items({"x", "boom"}), b.Callback()).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"y"}), c.Callback()).ok());
  f.encoder->Open();
  EXPECT_EQ(b.Wait().status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(b.Wait().status().message(), HasSubstr("tower failed"));
  EXPECT_THAT(std::string(c.Wait().status().message()), StartsWith("input[0].image: tower failed"));
  ASSERT_TRUE(f.pool->Submit(Items({"z"}), d.Callback()).ok());  // the pool goes on
  ExpectRows(d.Wait(), {"z"});
}

TEST(EncoderPoolTest, CacheHitsShareRowsAndSkipTheQueue) {
  EncoderPoolOptions o;
  o.workers = 1;
  Fixture f(o);
  Outcome first, second, third;
  ASSERT_TRUE(f.pool->Submit(Items({"image a"}), first.Callback()).ok());
  ExpectRows(first.Wait(), {"image a"});
  ASSERT_TRUE(f.pool->Submit(Items({"image a", "image b"}), second.Callback()).ok());
  ExpectRows(second.Wait(), {"image a", "image b"});
  EXPECT_EQ((*first.Wait())[0].get(), (*second.Wait())[0].get());  // shared, not copied
  EXPECT_EQ(f.observer.hits(), 1);
  EXPECT_EQ(f.observer.misses(), 2);

  // All hits: no batch, answered on the delivery thread.
  f.encoder->Close();  // a batch would now block: the job must not need one
  ASSERT_TRUE(f.pool->Submit(Items({"image b", "image a"}), third.Callback()).ok());
  EXPECT_EQ(f.pool->queued_items(), 0);
  ExpectRows(third.Wait(), {"image b", "image a"});
  EXPECT_NE(third.thread, std::this_thread::get_id());
  EXPECT_EQ(f.observer.hits(), 3);
  EXPECT_THAT(f.encoder->batch_sizes(), ElementsAre(1, 1));
  f.encoder->Open();
}

TEST(EncoderPoolTest, CacheEvictsLeastRecentlyUsedByBytes) {
  EncoderPoolOptions o;
  o.workers = 1;
  o.cache_bytes = 32;  // two items of 6 bytes: FakeRows gives [2][2] fp32 = 16 bytes each
  Fixture f(o);
  auto run = [&](const std::string& bytes) {
    Outcome out;
    EXPECT_TRUE(f.pool->Submit(Items({bytes}), out.Callback()).ok());
    ExpectRows(out.Wait(), {bytes});
  };
  run("aaaaaa");  // miss
  run("bbbbbb");  // miss; cache: b a
  run("aaaaaa");  // hit;  cache: a b
  run("cccccc");  // miss; evicts b: c a
  EXPECT_EQ(f.observer.hits(), 1);
  EXPECT_EQ(f.observer.misses(), 3);
  run("aaaaaa");  // hit
  EXPECT_EQ(f.observer.hits(), 2);
  run("bbbbbb");  // miss: it was evicted
  EXPECT_EQ(f.observer.misses(), 4);
  run("bbbbbbbbb");  // [5][2] = 40 bytes > the whole cache: never stored
  run("bbbbbbbbb");
  EXPECT_EQ(f.observer.misses(), 6);
  EXPECT_EQ(f.encoder->batch_sizes().size(), 6u);
}

TEST(EncoderPoolTest, ShutdownCancelsQueuedJobsAndFinishesRunningBatches) {
  EncoderPoolOptions o = NoCache();
  o.workers = 1;
  Fixture f(o);
  f.encoder->Close();
  Outcome a, b, c;
  ASSERT_TRUE(f.pool->Submit(Items({"held"}), a.Callback()).ok());
  f.encoder->WaitBatches(1);
  ASSERT_TRUE(f.pool->Submit(Items({"b1", "b2"}), b.Callback()).ok());
  ASSERT_TRUE(f.pool->Submit(Items({"c1"}), c.Callback()).ok());
  std::thread destroyer([&] { f.pool.reset(); });
  // Queued jobs are cancelled while the running batch is still held.
  EXPECT_EQ(b.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(c.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a.Calls(), 0);
  f.encoder->Open();
  destroyer.join();
  ExpectRows(a.Wait(), {"held"});
  EXPECT_EQ(a.Calls(), 1);
  EXPECT_EQ(b.Calls(), 1);
  EXPECT_EQ(c.Calls(), 1);
}

TEST(EncoderPoolTest, WorkersRunAtTheirNiceValue) {
  EncoderPoolOptions o = NoCache();
  o.workers = 2;
  o.threads_per_worker = 2;
  o.nice = 7;
  const int caller_nice = CurrentNice();
  Fixture f(o);
  Outcome out;
  ASSERT_TRUE(f.pool->Submit(Items({"a", "b", "c", "d"}), out.Callback()).ok());
  ExpectRows(out.Wait(), {"a", "b", "c", "d"});
  // Prepare and the ParallelFor tasks all ran at nice 7, whichever threads ran them.
  EXPECT_THAT(f.encoder->nice_values(), ElementsAre(std::max(7, caller_nice)));
  EXPECT_EQ(CurrentNice(), caller_nice);  // the caller's own thread is untouched
}

// Many threads submit, cancel and hit the cache at once; every accepted job gets exactly one
// answer, and every successful answer is right. Run under TSan too.
TEST(EncoderPoolTest, StressSubmitAndCancel) {
  EncoderPoolOptions o;
  o.workers = 3;
  o.threads_per_worker = 2;
  o.max_queued_items = 16;
  o.max_batch = 4;
  o.cache_bytes = 160;  // small: entries come and go
  Fixture f(o);
  constexpr int kThreads = 6, kJobsPerThread = 150;
  struct Job {
    std::vector<std::string> bytes;
    bool has_bad = false;
    Outcome out;
  };
  std::vector<std::vector<std::unique_ptr<Job>>> jobs(kThreads);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      std::vector<JobId> accepted;
      for (int j = 0; j < kJobsPerThread; ++j) {
        auto job = std::make_unique<Job>();
        const int n = 1 + static_cast<int>(rng() % 3);
        std::vector<MediaItem> items;
        for (int i = 0; i < n; ++i) {
          std::string b = (rng() % 25 == 0) ? "bad" : absl::StrCat("img", rng() % 20);
          job->has_bad |= b == "bad";
          job->bytes.push_back(b);
          items.push_back(Item(b));
        }
        // Like a client told to retry later: resubmit until the queue has room.
        EncoderPool::Done done = job->out.Callback();
        if (!accepted.empty() && rng() % 8 == 0) {
          // `done` may call back into the pool.
          done = [done, pool = f.pool.get(), other = accepted.back()](EncoderPool::Result r) {
            pool->Cancel(other);
            EXPECT_GE(pool->queued_items(), 0);
            done(std::move(r));
          };
        }
        absl::StatusOr<JobId> id;
        while (true) {
          id = f.pool->Submit(items, done);
          if (id.ok() || id.status().code() != absl::StatusCode::kResourceExhausted) break;
          ++refused;
          std::this_thread::yield();
        }
        ASSERT_TRUE(id.ok()) << id.status();
        accepted.push_back(*id);
        if (rng() % 4 == 0) {
          // Cancel this job or an earlier one of this thread (maybe finished by now).
          f.pool->Cancel(rng() % 2 ? *id : accepted[rng() % accepted.size()]);
        }
        jobs[t].push_back(std::move(job));
      }
    });
  }
  for (auto& th : threads) th.join();
  int ok = 0, cancelled = 0, failed = 0;
  for (auto& per_thread : jobs) {
    for (auto& job : per_thread) {
      const EncoderPool::Result& r = job->out.Wait();
      if (r.ok()) {
        EXPECT_FALSE(job->has_bad);
        ExpectRows(r, job->bytes);
        ++ok;
      } else if (r.status().code() == absl::StatusCode::kCancelled) {
        ++cancelled;
      } else {
        EXPECT_TRUE(job->has_bad) << r.status();
        EXPECT_THAT(r.status().message(), HasSubstr("cannot decode"));
        ++failed;
      }
    }
  }
  EXPECT_EQ(f.pool->queued_items(), 0);
  f.pool.reset();
  for (auto& per_thread : jobs) {
    for (auto& job : per_thread) EXPECT_EQ(job->out.Calls(), 1);
  }
  EXPECT_GT(ok, 0);
  EXPECT_EQ(f.observer.last_depth(), 0);
  std::printf("stress: %d ok, %d cancelled, %d failed, %d refused\n", ok, cancelled, failed,
              refused.load());
}

}  // namespace
}  // namespace modrwkv::encoders
