// Continuous batching over one Model: the scheduler thread owns the model, its state slots and the
// batch. Other threads talk to it only through thread-safe calls that enqueue work (requests,
// cancellations, session commands); results come back through sinks and callbacks invoked on the
// scheduler thread, which must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/base/session_id.h"
#include "engine/model/initial_state.h"
#include "engine/model/model.h"
#include "engine/sampling/sampler.h"
#include "engine/text/stop_conditions.h"
#include "engine/text/tokenizer.h"

namespace modrwkv {

using RequestId = uint64_t;

enum class EndReason {
  kStopToken,   // sampled a stop token
  kLength,      // max_tokens
  kStopString,  // a stop string matched
  kCancelled,   // Cancel() or the client went away
  kDeadline,    // the request's deadline passed (queued, prefilling or decoding)
  kError,       // see FinishEvent::status
};
std::string_view EndReasonName(EndReason r);  // "stop", "length", "stop_string", ...

// One part of the prompt, in order: token ids or embedding rows [rows, n_embd] (encoders).
struct InputRows {
  std::vector<int32_t> tokens;
  std::vector<float> embeddings;
};

// What a request produces.
enum class RequestOutput {
  kTokens,       // generated tokens, streamed (sampling and stop apply)
  kHiddenState,  // nothing generated: FinishEvent::hidden_state holds the last prompt row's
                 // hidden state after ln_out, for a task head outside the engine (forecasting)
};

struct EngineRequest {
  std::vector<InputRows> prompt;  // at least one row in total
  RequestOutput output = RequestOutput::kTokens;
  SamplerConfig sampling;
  StopConditions stop;
  // Continue this session's state and leave the final state in it. Must belong to `owner`.
  std::optional<SessionId> session;
  // Without a session: start from this trained state instead of the zero state (it must fit the
  // model: ModelConfig::StateFloats() floats). Not with `session`, which has its own state.
  std::shared_ptr<const InitialState> initial_state;
  std::string owner;       // caller identity (sessions are bound to it); "" when auth is off
  std::string request_id;  // for logs
  absl::Time deadline = absl::InfiniteFuture();
  // A waiting request of higher priority is admitted before every waiting one of lower priority,
  // and a running prompt of higher priority takes a step's prefill rows before any of lower
  // priority (decodes run every step whatever their priority). Never pre-empts a running
  // request. Among equal priorities see SchedulerOptions::fair_callers; with
  // SchedulerOptions::priority_aging the priority rises while the request waits.
  int priority = 0;
};

// Tokens generated since the last event. `text` is valid UTF-8 and never ends inside a
// character or a possible stop string (see StopMatcher).
struct TokenEvent {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<SampleResult> logprobs;  // one per token when sampling.logprobs_top_n >= 0
};

struct FinishEvent {
  // A RequestOutput::kHiddenState request that ran to the end of its prompt ends with kLength.
  EndReason reason = EndReason::kError;
  absl::Status status;              // OK unless reason == kError
  std::vector<float> hidden_state;  // RequestOutput::kHiddenState, reason kLength: [n_embd]
  int prompt_tokens = 0;
  int generated_tokens = 0;
  absl::Duration queue_time;           // submit -> first step that included it
  absl::Duration time_to_first_token;  // submit -> first token (InfiniteDuration if none)
  absl::Duration total_time;
};

// Receives one request's stream, on the scheduler thread: implementations hand events over to
// their own thread and return at once. OnFinish is called exactly once, last.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void OnTokens(TokenEvent event) = 0;
  virtual void OnFinish(FinishEvent event) = 0;
};

// Observes the scheduler for metrics; called on the scheduler thread, must be cheap.
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStep(int batch_sequences, int batch_tokens, absl::Duration step_time) {}
  // Called on the submitting thread: "queue_full", "queued_tokens", "draining".
  virtual void OnAdmissionRejected(std::string_view reason) {}
  virtual void OnFirstToken(absl::Duration ttft) {}
  virtual void OnInterTokenLatency(absl::Duration itl) {}
  virtual void OnFinish(const FinishEvent& e) {}
  virtual void OnSessionOffload(bool to_cold) {}
  // An idle session was deleted by the pool: "cold_capacity" (LRU eviction) or "ttl".
  virtual void OnSessionEvicted(std::string_view why) {}
  // A fresh request's slot, or a new session, was started from the trained initial state `name`.
  virtual void OnInitialStateStart(std::string_view name) {}
  // A model step failed; `status` is the backend's own (internal) error, for the operator's log.
  virtual void OnStepError(const absl::Status& status) {}
  // The backend cannot run steps any more (Model::Health): every request has ended and new ones
  // are refused UNAVAILABLE (ENGINE_FAILED) from now on. Called once.
  virtual void OnEngineFailed(const absl::Status& status) {}
};

struct SchedulerOptions {
  int max_running = 32;           // sequences in the batch at once (<= model slots)
  int max_step_tokens = 512;      // per-step budget: decode tokens + prefill rows
  int max_queued_requests = 256;  // admission bound (waiting, not yet running)
  int64_t max_queued_prompt_tokens = 1 << 20;
  int max_cold_sessions = 1024;    // idle sessions kept in host memory (LRU)
  int max_sessions_per_owner = 0;  // sessions one caller may hold; 0 = no limit
  // A caller's own quota instead (StatePoolOptions::sessions_quota_of); scheduler thread.
  std::function<std::optional<int>(const std::string& owner)> sessions_quota_of;
  // Callers (EngineRequest::owner) share the batch and the prefill budget fairly: among waiting
  // requests of equal priority the next one admitted is the earliest of the caller with the
  // fewest sequences in the batch, and running prompts of equal priority share a step's prefill
  // rows max-min fairly among their callers first. Off: first come, first served, and the rows
  // shared among prompts alike. With one identity (auth off) both are the same.
  bool fair_callers = true;
  // > 0: a request counts as one priority level higher for every priority_aging since it was
  // submitted, in admission and in a step's prefill rows alike. A difference in priority becomes
  // a head start in time: a request k levels lower goes ahead of a higher one that arrived more
  // than about (k + 1) x priority_aging after it, so it waits about k x priority_aging longer
  // than the higher requests queued beside it, not for as long as they keep coming. Zero:
  // strict priorities, where a lower priority waits as long as a higher one is waiting or
  // prefilling.
  absl::Duration priority_aging = absl::ZeroDuration();
  absl::Duration session_ttl = absl::Hours(1);  // idle sessions older than this are deleted
  // An idle session evicted because the cold tier is full, as a state blob (encoded off the
  // scheduler thread): the server moves it to the shared tier instead of losing it. Unset: lost.
  std::function<void(SessionId id, std::string owner, std::string blob)> spill_session;
  // New session ids start with this replica's routing hint (engine/base/session_id.h).
  std::optional<uint32_t> session_routing_hint;

  absl::Status Validate(int model_slots) const;
};

struct SessionInfo {
  SessionId id;
  bool hot = false;    // in a model slot (vs the host-memory cold tier)
  bool busy = false;   // a request is running on it
  int64_t tokens = 0;  // tokens consumed into its state
  absl::Time last_used;
};

struct SchedulerStats {
  int running = 0, waiting = 0;
  int64_t queued_prompt_tokens = 0;  // counted against max_queued_prompt_tokens
  int slots_used = 0, slots_total = 0;
  int sessions_hot = 0, sessions_cold = 0;
  int64_t cold_tier_bytes = 0;  // host memory of the cold tier (StatePool::TierStats)
  ModelCounters model;          // the model's counters after the last step
  bool draining = false;
};

class Scheduler {
 public:
  // Starts the scheduler thread. `model` and `tokenizer` must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Model* model, const Tokenizer* tokenizer,
                                                           const SchedulerOptions& options,
                                                           SchedulerObserver* observer = nullptr);
  ~Scheduler();  // cancels what is left and joins the thread

  // Thread-safe, cheap, never blocks on the model. Admission control: RESOURCE_EXHAUSTED when the
  // queue bounds are reached, UNAVAILABLE while draining, INVALID_ARGUMENT for a bad request
  // (message names the field). On success the sink will get OnFinish exactly once.
  absl::StatusOr<RequestId> Submit(EngineRequest request, std::shared_ptr<StreamSink> sink);
  // Thread-safe; the request finishes with kCancelled within one step. Unknown ids are ignored.
  void Cancel(RequestId id);

  // PooledSession commands: thread-safe, run on the scheduler thread between steps; `done` is
  // called there. NOT_FOUND for unknown sessions or sessions of another owner; FAILED_PRECONDITION
  // for a session a request is running on.
  using SessionCallback = std::function<void(absl::StatusOr<SessionInfo>)>;
  // The new session holds the zero state, or `initial` (which must fit the model).
  void CreateSession(std::string owner, SessionCallback done,
                     std::shared_ptr<const InitialState> initial = nullptr);
  void GetSession(SessionId id, std::string owner, SessionCallback done);
  void DeleteSession(SessionId id, std::string owner, std::function<void(absl::Status)> done);
  void ForkSession(SessionId id, std::string owner, SessionCallback done);
  // A versioned, checksummed blob (engine/serving/state_blob.h) that ImportSession accepts on any
  // server running the same model.
  void ExportSession(SessionId id, std::string owner,
                     std::function<void(absl::StatusOr<std::string>)> done);
  // With `id` the session keeps that id (a session moving from another server: the shared tier);
  // ALREADY_EXISTS if this server has it.
  void ImportSession(std::string blob, std::string owner, SessionCallback done,
                     std::optional<SessionId> id = std::nullopt);
  // Thread-safe, no round trip: whether this server has session `id` of `owner`.
  bool KnowsSession(SessionId id, const std::string& owner) const;
  // Every idle session (id, owner): what a draining server hands to the shared tier.
  void IdleSessions(
      std::function<void(absl::StatusOr<std::vector<std::pair<SessionId, std::string>>>)> done);

  // Stops admitting new requests; running ones continue. Idempotent.
  void Drain();
  SchedulerStats stats() const;  // thread-safe snapshot

 private:
  class Impl;
  explicit Scheduler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modrwkv
