#include "server/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace modrwkv::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Latency buckets from 1 ms to 60 s, roughly x2.5 apart.
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,      2.5,   5,    10,    30,   60};
  return b;
}
const Histogram::BucketBoundaries& StepBuckets() {
  static const Histogram::BucketBoundaries b = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                                0.05,   0.1,   0.2,   0.5,   1,    2};
  return b;
}
const Histogram::BucketBoundaries& CountBuckets() {
  static const Histogram::BucketBoundaries b = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  return b;
}

class Refresher : public prometheus::Collectable {
 public:
  Refresher(Metrics* m, std::shared_ptr<prometheus::Registry> r) : m_(m), r_(std::move(r)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    m_->Refresh();
    return r_->Collect();
  }

 private:
  Metrics* m_;
  std::shared_ptr<prometheus::Registry> r_;
};

constexpr absl::string_view kFinishReasons[] = {"stop",      "length",   "stop_string",
                                                "cancelled", "deadline", "error"};
constexpr absl::string_view kRejectionReasons[] = {
    "queue_full",         "queued_tokens",   "draining",      "loading",
    "encoder_queue_full", "caller_requests", "caller_streams"};
// Methods and codes whose series exist from start-up (alerts on rate() need a zero to start from).
constexpr absl::string_view kStreamingMethods[] = {"Generate", "Chat"};
constexpr grpc::StatusCode kAlertCodes[] = {grpc::StatusCode::OK,
                                            grpc::StatusCode::INVALID_ARGUMENT,
                                            grpc::StatusCode::RESOURCE_EXHAUSTED,
                                            grpc::StatusCode::UNAVAILABLE,
                                            grpc::StatusCode::DEADLINE_EXCEEDED,
                                            grpc::StatusCode::CANCELLED,
                                            grpc::StatusCode::INTERNAL};

}  // namespace

absl::string_view GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

EncoderMetrics::EncoderMetrics(prometheus::Registry& r) {
  queue_ = &BuildGauge()
                .Name("modrwkv_encoder_queue_items")
                .Help("Media items waiting for the encoder workers.")
                .Register(r)
                .Add({});
  encode_seconds_ =
      &BuildHistogram()
           .Name("modrwkv_encoder_batch_seconds")
           .Help("Time to encode one batch of media items (decode, encoder, adapter).")
           .Register(r)
           .Add({}, LatencyBuckets());
  batch_items_ = &BuildHistogram()
                      .Name("modrwkv_encoder_batch_items")
                      .Help("Media items encoded together in one batch.")
                      .Register(r)
                      .Add({}, CountBuckets());
  image_rows_ = &BuildHistogram()
                     .Name("modrwkv_image_rows_per_request")
                     .Help("Prompt rows that came from images, per request or chat turn.")
                     .Register(r)
                     .Add({}, Histogram::BucketBoundaries{16, 64, 144, 256, 576, 1152, 2304, 4608});
  audio_rows_ =
      &BuildHistogram()
           .Name("modrwkv_audio_rows_per_request")
           .Help("Prompt rows that came from audio clips, per request or chat turn.")
           .Register(r)
           .Add({}, Histogram::BucketBoundaries{16, 32, 64, 128, 256, 512, 768, 1024, 1536});
  series_rows_ =
      &BuildHistogram()
           .Name("modrwkv_series_rows_per_request")
           .Help("Prompt rows that came from time series, per request or forecast round.")
           .Register(r)
           .Add({}, Histogram::BucketBoundaries{4, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384});
  auto& lookups = BuildCounter()
                      .Name("modrwkv_encoder_cache_lookups_total")
                      .Help("Encoder-output cache lookups, by result.")
                      .Register(r);
  hits_ = &lookups.Add({{"result", "hit"}});
  misses_ = &lookups.Add({{"result", "miss"}});
  items_ = &BuildCounter()
                .Name("modrwkv_encoder_items_total")
                .Help("Media items encoded (cache misses that completed).")
                .Register(r)
                .Add({});
}

void EncoderMetrics::OnQueueDepth(int items) { queue_->Set(items); }
void EncoderMetrics::OnBatch(int items, absl::Duration encode_time) {
  encode_seconds_->Observe(absl::ToDoubleSeconds(encode_time));
  batch_items_->Observe(items);
}
void EncoderMetrics::OnCacheLookup(bool hit) { (hit ? hits_ : misses_)->Increment(); }
void EncoderMetrics::OnItemRows(int /*rows*/) { items_->Increment(); }
void EncoderMetrics::OnRequestRows(int image_rows, int audio_rows, int series_rows) {
  if (image_rows > 0) image_rows_->Observe(image_rows);
  if (audio_rows > 0) audio_rows_->Observe(audio_rows);
  if (series_rows > 0) series_rows_->Observe(series_rows);
}

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  encoder_ = std::make_unique<EncoderMetrics>(r);
  auto gauge = [&](const char* name, const char* help) -> prometheus::Gauge* {
    return &BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  auto hist = [&](const char* name, const char* help,
                  const Histogram::BucketBoundaries& b) -> Histogram* {
    return &BuildHistogram().Name(name).Help(help).Register(r).Add({}, b);
  };
  auto counter = [&](const char* name, const char* help) -> prometheus::Counter* {
    return &BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  running_ = gauge("modrwkv_requests_running", "Sequences in the running batch.");
  waiting_ = gauge("modrwkv_requests_waiting", "Requests admitted and waiting for a slot.");
  slots_used_ = gauge("modrwkv_state_slots_used",
                      "State slots in use (running requests and hot idle sessions).");
  slots_total_ = gauge("modrwkv_state_slots_total", "State slots allocated at start-up.");
  auto& sessions = BuildGauge().Name("modrwkv_sessions").Help("Sessions by tier.").Register(r);
  sessions_hot_ = &sessions.Add({{"tier", "hot"}});
  sessions_cold_ = &sessions.Add({{"tier", "cold"}});
  cold_tier_bytes_ = gauge("modrwkv_cold_tier_bytes",
                           "Host memory held by the session cold tier (pinned with a GPU).");
  ready_ = gauge("modrwkv_ready", "1 when readiness is SERVING.");
  draining_ = gauge("modrwkv_draining", "1 while draining before shutdown.");
  engine_failed_ = gauge("modrwkv_engine_failed",
                         "1 once the model's device failed for good (a sticky GPU error): "
                         "readiness is off until the process restarts.");

  ttft_ = hist("modrwkv_time_to_first_token_seconds", "Submit to first generated token.",
               LatencyBuckets());
  itl_ = hist("modrwkv_inter_token_latency_seconds", "Time between consecutive tokens of a stream.",
              LatencyBuckets());
  e2e_ = hist("modrwkv_request_duration_seconds", "Submit to finish, every finish reason.",
              LatencyBuckets());
  queue_ = hist("modrwkv_request_queue_time_seconds", "Submit to the first step that ran it.",
                LatencyBuckets());
  step_time_ =
      hist("modrwkv_step_duration_seconds", "Duration of one batched model step.", StepBuckets());
  batch_size_ = hist("modrwkv_step_batch_size", "Sequences in one step.", CountBuckets());
  batch_tokens_ = hist("modrwkv_step_batch_tokens",
                       "Rows (decode tokens + prefill rows) in one step.", CountBuckets());

  prompt_tokens_ = counter("modrwkv_prompt_tokens_total", "Prompt tokens of finished requests.");
  prefix_hits_ = counter("modrwkv_prefix_cache_hits_total",
                         "Requests whose prompt prefix state was found in the prefix cache.");
  prefix_misses_ = counter("modrwkv_prefix_cache_misses_total",
                           "Requests with a cacheable prefix that was not cached (prefilled).");
  auto& shared = BuildCounter()
                     .Name("modrwkv_shared_sessions_total")
                     .Help(
                         "Shared session tier (Redis) operations: sessions stored there, "
                         "resumed from there, operations that failed; with write-through, local "
                         "copies found stale and stores refused (another replica took it).")
                     .Register(r);
  shared_stored_ = &shared.Add({{"event", "stored"}});
  shared_resumed_ = &shared.Add({{"event", "resumed"}});
  shared_errors_ = &shared.Add({{"event", "error"}});
  shared_stale_ = &shared.Add({{"event", "stale"}});
  shared_conflicts_ = &shared.Add({{"event", "conflict"}});
  shared_store_ = hist("modrwkv_shared_session_store_seconds",
                       "Write-through: a call's session stored in the shared tier (export and "
                       "Redis), which its answer waits for.",
                       StepBuckets());
  prefix_tokens_saved_ = counter("modrwkv_prefix_cache_tokens_saved_total",
                                 "Prompt tokens not prefilled thanks to the prefix cache.");
  generated_tokens_ =
      counter("modrwkv_generated_tokens_total", "Tokens generated by finished requests.");
  auto& offloads = BuildCounter()
                       .Name("modrwkv_session_offloads_total")
                       .Help("Session states moved between state slots and the cold tier.")
                       .Register(r);
  offload_to_cold_ = &offloads.Add({{"direction", "to_cold"}});
  offload_to_hot_ = &offloads.Add({{"direction", "to_hot"}});
  auto& evictions =
      BuildCounter()
          .Name("modrwkv_sessions_evicted_total")
          .Help("Idle sessions deleted by the server: cold-tier overflow (LRU) or TTL.")
          .Register(r);
  evicted_capacity_ = &evictions.Add({{"reason", "cold_capacity"}});
  evicted_ttl_ = &evictions.Add({{"reason", "ttl"}});
  sparse_ffn_inputs_ = counter(
      "modrwkv_sparse_ffn_inputs_total",
      "Inputs of the channel mix's value products that may skip zero activations (decode steps "
      "of few sequences, --sparse-ffn; counted by the CPU backend).");
  sparse_ffn_inputs_read_ =
      counter("modrwkv_sparse_ffn_inputs_read_total",
              "Of modrwkv_sparse_ffn_inputs_total, those whose weights were read (nonzero in some "
              "sequence): the ratio is the share of value weights those steps read.");
  step_errors_ = counter("modrwkv_step_errors_total",
                         "Model steps that failed (their requests ended with INTERNAL).");
  overflows_ = counter("modrwkv_stream_buffer_overflows_total",
                       "Streams cut off because the client read too slowly.");

  finished_ = &BuildCounter()
                   .Name("modrwkv_requests_finished_total")
                   .Help("Generation requests finished, by finish reason.")
                   .Register(r);
  for (absl::string_view reason : kFinishReasons) finished_->Add({{"reason", std::string(reason)}});
  rpcs_ = &BuildCounter()
               .Name("modrwkv_grpc_requests_total")
               .Help("RPCs completed, by method and gRPC status code.")
               .Register(r);
  for (absl::string_view m : kStreamingMethods) {
    for (grpc::StatusCode c : kAlertCodes) {
      rpcs_->Add({{"method", std::string(m)}, {"code", std::string(GrpcCodeName(c))}});
    }
  }
  http_requests_ = &BuildCounter()
                        .Name("modrwkv_http_requests_total")
                        .Help("HTTP API requests answered, by method and HTTP status.")
                        .Register(r);
  caller_requests_ = &BuildCounter()
                          .Name("modrwkv_caller_requests_total")
                          .Help(
                              "RPCs and HTTP API requests answered, by caller identity (the "
                              "token file's names, certificate names; --caller-metrics) and "
                              "gRPC status code.")
                          .Register(r);
  caller_tokens_ = &BuildCounter()
                        .Name("modrwkv_caller_tokens_total")
                        .Help(
                            "Prompt and generated tokens of answered requests, by caller "
                            "identity and kind (prompt, generated).")
                        .Register(r);
  rejections_ = &BuildCounter()
                     .Name("modrwkv_admission_rejections_total")
                     .Help("Requests refused at admission, by reason.")
                     .Register(r);
  for (absl::string_view reason : kRejectionReasons) {
    rejections_->Add({{"reason", std::string(reason)}});
  }
  initial_state_starts_ =
      &BuildCounter()
           .Name("modrwkv_initial_state_starts_total")
           .Help("Requests and sessions started from a trained initial state, by state name.")
           .Register(r);
}

void Metrics::RegisterInitialStates(const std::vector<std::string>& names) {
  for (const std::string& name : names) initial_state_starts_->Add({{"state", name}});
}

Metrics::~Metrics() {
  // Stop serving scrapes before the gauges go away.
  exposer_.reset();
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& bind_address) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->refresher_ = std::make_shared<Refresher>(m.get(), m->registry_);
  if (!bind_address.empty()) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(bind_address, /*num_threads=*/2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", bind_address, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->refresher_);
    const std::vector<int> ports = m->exposer_->GetListeningPorts();
    m->port_ = ports.empty() ? -1 : ports.front();
  }
  return m;
}

void Metrics::AttachStats(std::function<SchedulerStats()> stats) {
  std::lock_guard<std::mutex> l(stats_mu_);
  stats_ = std::move(stats);
}

void Metrics::AttachScheduler(const Scheduler* scheduler) {
  if (scheduler == nullptr) return AttachStats(nullptr);
  AttachStats([scheduler] { return scheduler->stats(); });
}

void Metrics::Refresh() {
  std::lock_guard<std::mutex> l(stats_mu_);
  if (!stats_) return;
  const SchedulerStats st = stats_();
  running_->Set(st.running);
  waiting_->Set(st.waiting);
  slots_used_->Set(st.slots_used);
  slots_total_->Set(st.slots_total);
  sessions_hot_->Set(st.sessions_hot);
  sessions_cold_->Set(st.sessions_cold);
  cold_tier_bytes_->Set(static_cast<double>(st.cold_tier_bytes));
  // The model's counters are totals since it was built: the counters take what they add.
  auto catch_up = [](prometheus::Counter* c, int64_t total) {
    const double add = static_cast<double>(total) - c->Value();
    if (add > 0) c->Increment(add);
  };
  catch_up(sparse_ffn_inputs_, st.model.sparse_ffn_inputs);
  catch_up(sparse_ffn_inputs_read_, st.model.sparse_ffn_inputs_read);
}

void Metrics::OnRpcDone(absl::string_view method, grpc::StatusCode code) {
  if (!recording()) return;
  rpcs_->Add({{"method", std::string(method)}, {"code", std::string(GrpcCodeName(code))}})
      .Increment();
}

void Metrics::OnCallerRequest(absl::string_view caller, grpc::StatusCode code,
                              int64_t prompt_tokens, int64_t generated_tokens) {
  if (!recording()) return;
  const std::string who(caller);
  caller_requests_->Add({{"caller", who}, {"code", std::string(GrpcCodeName(code))}}).Increment();
  if (prompt_tokens > 0) {
    caller_tokens_->Add({{"caller", who}, {"kind", "prompt"}})
        .Increment(static_cast<double>(prompt_tokens));
  }
  if (generated_tokens > 0) {
    caller_tokens_->Add({{"caller", who}, {"kind", "generated"}})
        .Increment(static_cast<double>(generated_tokens));
  }
}

void Metrics::OnHttpDone(absl::string_view method, int http_status) {
  if (!recording()) return;
  http_requests_->Add({{"method", std::string(method)}, {"status", absl::StrCat(http_status)}})
      .Increment();
}

void Metrics::OnPrefixCache(bool hit, int tokens) {
  if (!recording()) return;
  (hit ? prefix_hits_ : prefix_misses_)->Increment();
  if (hit) prefix_tokens_saved_->Increment(tokens);
}

void Metrics::OnSharedSessionStore(absl::Duration d) {
  shared_store_->Observe(absl::ToDoubleSeconds(d));
}

void Metrics::OnStreamOverflow() { overflows_->Increment(); }

void Metrics::OnSharedSessions(SharedSessionEvent event) {
  switch (event) {
    case SharedSessionEvent::kStored:
      return shared_stored_->Increment();
    case SharedSessionEvent::kResumed:
      return shared_resumed_->Increment();
    case SharedSessionEvent::kError:
      return shared_errors_->Increment();
    case SharedSessionEvent::kStale:
      return shared_stale_->Increment();
    case SharedSessionEvent::kConflict:
      return shared_conflicts_->Increment();
  }
}

void Metrics::OnServerRejected(absl::string_view reason) {
  rejections_->Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::OnStep(int batch_sequences, int batch_tokens, absl::Duration step_time) {
  if (!recording()) return;
  step_time_->Observe(absl::ToDoubleSeconds(step_time));
  batch_size_->Observe(batch_sequences);
  batch_tokens_->Observe(batch_tokens);
}

void Metrics::OnAdmissionRejected(std::string_view reason) {
  if (!recording()) return;
  rejections_->Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::OnFirstToken(absl::Duration ttft) {
  if (recording()) ttft_->Observe(absl::ToDoubleSeconds(ttft));
}

void Metrics::OnInterTokenLatency(absl::Duration itl) {
  if (recording()) itl_->Observe(absl::ToDoubleSeconds(itl));
}

void Metrics::OnFinish(const FinishEvent& e) {
  if (!recording()) return;
  finished_->Add({{"reason", std::string(EndReasonName(e.reason))}}).Increment();
  prompt_tokens_->Increment(e.prompt_tokens);
  generated_tokens_->Increment(e.generated_tokens);
  e2e_->Observe(absl::ToDoubleSeconds(e.total_time));
  queue_->Observe(absl::ToDoubleSeconds(e.queue_time));
}

void Metrics::OnSessionOffload(bool to_cold) {
  (to_cold ? offload_to_cold_ : offload_to_hot_)->Increment();
}

void Metrics::OnInitialStateStart(std::string_view name) {
  if (recording()) initial_state_starts_->Add({{"state", std::string(name)}}).Increment();
}

void Metrics::OnSessionEvicted(std::string_view why) {
  (why == "ttl" ? evicted_ttl_ : evicted_capacity_)->Increment();
}

void Metrics::OnEngineFailed(const absl::Status& status) {
  engine_failed_->Set(1);
  if (engine_failed_handler_) engine_failed_handler_(status);
}

void Metrics::OnStepError(const absl::Status& status) {
  step_errors_->Increment();
  if (step_error_log_) step_error_log_(status);
}

}  // namespace modrwkv::server
