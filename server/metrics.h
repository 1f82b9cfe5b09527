// Prometheus metrics (prometheus-cpp) on their own HTTP port at /metrics. Scheduler events arrive
// through the SchedulerObserver interface (on the scheduler thread; every update is an atomic or a
// short lock inside prometheus-cpp); gauges of the scheduler's state are read from
// Scheduler::stats() at scrape time, so a scrape always sees the current values.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/pool/encoder_pool.h"
#include "engine/serving/scheduler.h"
#include "grpcpp/support/status_code_enum.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace modrwkv::server {

// Encoder worker pool events (encoder threads and the submitting gRPC thread).
class EncoderMetrics : public encoders::EncoderPoolObserver {
 public:
  explicit EncoderMetrics(prometheus::Registry& r);
  void OnQueueDepth(int items) override;
  void OnBatch(int items, absl::Duration encode_time) override;
  void OnCacheLookup(bool hit) override;
  void OnItemRows(int rows) override;
  // Prompt rows from images, audio and time series of one request (or chat turn, or forecast
  // round); zeros are not observed.
  void OnRequestRows(int image_rows, int audio_rows, int series_rows = 0);

 private:
  prometheus::Gauge* queue_;
  prometheus::Histogram *encode_seconds_, *batch_items_, *image_rows_, *audio_rows_, *series_rows_;
  prometheus::Counter *hits_, *misses_, *items_;
};

class Metrics : public SchedulerObserver {
 public:
  // `bind_address` "host:port" (port 0 = any free port); "" = no HTTP endpoint (metrics are still
  // counted, e.g. for tests of the registry).
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& bind_address);
  ~Metrics() override;

  int port() const { return port_; }  // bound port, or -1 without an endpoint
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Scrapes read these stats (called with a lock held; keep it short); nullptr detaches.
  // Thread-safe and synchronised with scrapes: once it returns, no scrape still reads the
  // previous source, so a detached scheduler may be destroyed.
  void AttachStats(std::function<SchedulerStats()> stats);
  void AttachScheduler(const Scheduler* scheduler);
  // Off during warm-up, so its requests are not counted. Thread-safe.
  void SetRecording(bool on) { recording_.store(on); }
  void SetReady(bool ready) { ready_->Set(ready ? 1 : 0); }
  void SetDraining(bool draining) { draining_->Set(draining ? 1 : 0); }

  // Server-side events (any thread).
  void OnRpcDone(absl::string_view method, grpc::StatusCode code);
  // An HTTP API request ("openai.ChatCompletions", ...) answered with `http_status`.
  void OnHttpDone(absl::string_view method, int http_status);
  // A request with a cacheable prefix found it (`hit`, sparing `tokens` of prefill) or not.
  void OnPrefixCache(bool hit, int tokens);
  // The shared session tier: a session stored there, one resumed from there, an operation that
  // failed (Redis unreachable or refusing).
  enum class SharedSessionEvent { kStored, kResumed, kError, kStale, kConflict };
  void OnSharedSessions(SharedSessionEvent event);
  void OnSharedSessionStore(absl::Duration d);  // write-through: export + store of one call
  void OnStreamOverflow();
  void OnServerRejected(absl::string_view reason);  // admission refused before the scheduler
  // One answered RPC or HTTP request of caller identity `caller` (never ""), with the tokens a
  // generation's prompt and output took: modrwkv_caller_requests_total{caller, code},
  // modrwkv_caller_tokens_total{caller, kind}.
  void OnCallerRequest(absl::string_view caller, grpc::StatusCode code, int64_t prompt_tokens,
                       int64_t generated_tokens);

  // SchedulerObserver (scheduler thread, except OnAdmissionRejected).
  void OnStep(int batch_sequences, int batch_tokens, absl::Duration step_time) override;
  void OnAdmissionRejected(std::string_view reason) override;
  void OnFirstToken(absl::Duration ttft) override;
  void OnInterTokenLatency(absl::Duration itl) override;
  void OnFinish(const FinishEvent& e) override;
  void OnSessionOffload(bool to_cold) override;
  void OnSessionEvicted(std::string_view why) override;
  void OnInitialStateStart(std::string_view name) override;
  // The trained initial states the server offers, so that each one's count is exported from
  // zero (modrwkv_initial_state_starts_total{state}); call before serving.
  void RegisterInitialStates(const std::vector<std::string>& names);
  void OnStepError(const absl::Status& status) override;
  // Where OnStepError's internal message goes (the server's log); set before serving.
  void SetStepErrorLog(std::function<void(const absl::Status&)> log) {
    step_error_log_ = std::move(log);
  }
  // The backend failed for good: modrwkv_engine_failed turns 1 and `handler` runs (the server
  // logs the error and turns readiness off); set before serving.
  void OnEngineFailed(const absl::Status& status) override;
  void SetEngineFailedHandler(std::function<void(const absl::Status&)> handler) {
    engine_failed_handler_ = std::move(handler);
  }

  EncoderMetrics* encoder_observer() { return encoder_.get(); }

  // Copies Scheduler::stats() into the gauges (called at every scrape).
  void Refresh();

 private:
  Metrics();
  bool recording() const { return recording_.load(std::memory_order_relaxed); }

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> refresher_;  // Refresh(), then the registry
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = -1;
  std::mutex stats_mu_;  // held while a scrape reads stats_, so detaching waits for it
  std::function<SchedulerStats()> stats_;
  std::atomic<bool> recording_{true};

  prometheus::Gauge *running_, *waiting_, *slots_used_, *slots_total_, *sessions_hot_,
      *sessions_cold_, *cold_tier_bytes_, *ready_, *draining_, *engine_failed_;
  prometheus::Histogram *ttft_, *itl_, *e2e_, *queue_, *step_time_, *batch_size_, *batch_tokens_,
      *shared_store_;
  prometheus::Counter *prompt_tokens_, *generated_tokens_, *offload_to_cold_, *offload_to_hot_,
      *overflows_, *evicted_capacity_, *evicted_ttl_, *step_errors_, *prefix_hits_, *prefix_misses_,
      *shared_stored_, *shared_resumed_, *shared_errors_, *shared_stale_, *shared_conflicts_,
      *prefix_tokens_saved_, *sparse_ffn_inputs_, *sparse_ffn_inputs_read_;
  std::function<void(const absl::Status&)> step_error_log_, engine_failed_handler_;
  prometheus::Family<prometheus::Counter>* finished_;
  prometheus::Family<prometheus::Counter>* rpcs_;
  prometheus::Family<prometheus::Counter>* http_requests_;
  prometheus::Family<prometheus::Counter>* rejections_;
  prometheus::Family<prometheus::Counter>* initial_state_starts_;
  prometheus::Family<prometheus::Counter>*caller_requests_, *caller_tokens_;
  std::unique_ptr<EncoderMetrics> encoder_;
};

// "OK", "INVALID_ARGUMENT", ...: gRPC's canonical code names.
absl::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace modrwkv::server
