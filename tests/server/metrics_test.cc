// Metrics: the series users alert on exist at zero from the start; observer events move them.
#include "server/metrics.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace modrwkv::server {
namespace {

std::string Text(const Metrics& m) {
  prometheus::TextSerializer s;
  return s.Serialize(m.registry()->Collect());
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(MetricsTest, AlertableSeriesExistAtZero) {
  auto m = Metrics::Create("").value();
  EXPECT_EQ(m->port(), -1);
  const std::string t = Text(*m);
  for (const char* reason : {"queue_full", "queued_tokens", "draining", "loading"}) {
    EXPECT_TRUE(
        Has(t, std::string("modrwkv_admission_rejections_total{reason=\"") + reason + "\"} 0"))
        << reason << "\n"
        << t;
  }
  for (const char* reason : {"stop", "length", "stop_string", "cancelled", "deadline", "error"}) {
    EXPECT_TRUE(Has(t, std::string("modrwkv_requests_finished_total{reason=\"") + reason + "\"} 0"))
        << reason;
  }
  EXPECT_TRUE(
      Has(t, "modrwkv_grpc_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"Generate\"} 0"));
  EXPECT_TRUE(Has(t, "modrwkv_prompt_tokens_total 0"));
  EXPECT_TRUE(Has(t, "modrwkv_session_offloads_total{direction=\"to_cold\"} 0"));
}

TEST(MetricsTest, ObserverEventsMoveTheirSeries) {
  auto m = Metrics::Create("").value();
  FinishEvent e;
  e.reason = EndReason::kLength;
  e.prompt_tokens = 7;
  e.generated_tokens = 11;
  e.total_time = absl::Milliseconds(30);
  m->OnFinish(e);
  m->OnAdmissionRejected("queue_full");
  m->OnFirstToken(absl::Milliseconds(3));
  m->OnInterTokenLatency(absl::Milliseconds(1));
  m->OnStep(4, 35, absl::Milliseconds(2));
  m->OnSessionOffload(true);
  m->OnRpcDone("Generate", grpc::StatusCode::OK);
  m->OnRpcDone("Tokenize", grpc::StatusCode::INVALID_ARGUMENT);
  m->OnStreamOverflow();
  const std::string t = Text(*m);
  EXPECT_TRUE(Has(t, "modrwkv_requests_finished_total{reason=\"length\"} 1")) << t;
  EXPECT_TRUE(Has(t, "modrwkv_prompt_tokens_total 7"));
  EXPECT_TRUE(Has(t, "modrwkv_generated_tokens_total 11"));
  EXPECT_TRUE(Has(t, "modrwkv_admission_rejections_total{reason=\"queue_full\"} 1"));
  EXPECT_TRUE(Has(t, "modrwkv_time_to_first_token_seconds_count 1"));
  EXPECT_TRUE(Has(t, "modrwkv_inter_token_latency_seconds_count 1"));
  EXPECT_TRUE(Has(t, "modrwkv_step_batch_size_sum 4"));
  EXPECT_TRUE(Has(t, "modrwkv_step_batch_tokens_sum 35"));
  EXPECT_TRUE(Has(t, "modrwkv_request_duration_seconds_count 1"));
  EXPECT_TRUE(Has(t, "modrwkv_session_offloads_total{direction=\"to_cold\"} 1"));
  EXPECT_TRUE(Has(t, "modrwkv_grpc_requests_total{code=\"OK\",method=\"Generate\"} 1"));
  EXPECT_TRUE(
      Has(t, "modrwkv_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"Tokenize\"} 1"));
  EXPECT_TRUE(Has(t, "modrwkv_stream_buffer_overflows_total 1"));
}

TEST(MetricsTest, WarmUpIsNotRecorded) {
  auto m = Metrics::Create("").value();
  m->SetRecording(false);
  FinishEvent e;
  e.reason = EndReason::kLength;
  e.generated_tokens = 4;
  m->OnFinish(e);
  m->OnStep(1, 1, absl::Milliseconds(1));
  m->SetRecording(true);
  const std::string t = Text(*m);
  EXPECT_TRUE(Has(t, "modrwkv_generated_tokens_total 0"));
  EXPECT_TRUE(Has(t, "modrwkv_step_duration_seconds_count 0"));
}

TEST(MetricsTest, ScrapesReadTheAttachedStats) {
  auto m = Metrics::Create("").value();
  m->AttachStats([] {
    SchedulerStats s;
    s.running = 3;
    s.slots_total = 8;
    return s;
  });
  m->Refresh();
  const std::string t = Text(*m);
  EXPECT_TRUE(Has(t, "modrwkv_requests_running 3")) << t;
  EXPECT_TRUE(Has(t, "modrwkv_state_slots_total 8"));
}

// The model's counters are totals since it was built; the exported counters follow them
// across scrapes.
TEST(MetricsTest, ModelCountersBecomeCounters) {
  auto m = Metrics::Create("").value();
  ModelCounters c;
  m->AttachStats([&c] {
    SchedulerStats s;
    s.model = c;
    return s;
  });
  c = {1000, 400};
  m->Refresh();
  std::string t = Text(*m);
  EXPECT_TRUE(Has(t, "modrwkv_sparse_ffn_inputs_total 1000")) << t;
  EXPECT_TRUE(Has(t, "modrwkv_sparse_ffn_inputs_read_total 400")) << t;
  c = {3000, 1000};
  m->Refresh();
  t = Text(*m);
  EXPECT_TRUE(Has(t, "modrwkv_sparse_ffn_inputs_total 3000")) << t;
  EXPECT_TRUE(Has(t, "modrwkv_sparse_ffn_inputs_read_total 1000")) << t;
}

// Shutdown detaches the scheduler and then destroys it: a scrape that is still reading its stats
// must be over when the detach returns.
TEST(MetricsTest, DetachingWaitsForTheScrapeInProgress) {
  auto m = Metrics::Create("").value();
  std::atomic<bool> inside{false}, left{false};
  std::atomic<int> calls{0};
  m->AttachStats([&] {
    calls.fetch_add(1);
    inside.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a slow stats read
    left.store(true);
    return SchedulerStats{};
  });
  std::thread scrape([&] { m->Refresh(); });
  while (!inside.load()) std::this_thread::yield();
  m->AttachScheduler(nullptr);  // what DrainAndStop does before destroying the scheduler
  EXPECT_TRUE(left.load()) << "detach returned while a scrape was still reading the stats";
  scrape.join();
  m->Refresh();  // detached: the old source is never called again
  EXPECT_EQ(calls.load(), 1);
}

TEST(MetricsTest, ServesTheTextFormatOverHttp) {
  auto m = Metrics::Create("127.0.0.1:0");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->port(), 0);
  auto busy = Metrics::Create("127.0.0.1:" + std::to_string((*m)->port()));
  EXPECT_FALSE(busy.ok());  // a taken port is an error, not a crash
}

}  // namespace
}  // namespace modrwkv::server
