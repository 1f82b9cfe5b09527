// What the gRPC services share: the engine once it is loaded, options, auth, metrics, logs.
// Owned by ModelServer; outlives every RPC (the gRPC server is shut down and waited for first).
#pragma once

#include <atomic>
#include <mutex>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "encoders/pool/encoder_pool.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/model/model.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/logger.h"
#include "server/metrics.h"
#include "server/prefix_cache.h"
#include "server/server_options.h"
#include "server/shared_sessions.h"

namespace modrwkv::server {

// One finished RPC, for the request log line and the per-code counter.
struct RpcRecord {
  absl::string_view method;  // "Generate", "Chat", "Tokenize", ...
  std::string request_id;
  std::string owner;
  std::string peer;
  grpc::StatusCode code = grpc::StatusCode::OK;
  int http_status = 0;  // an HTTP API request's answer (counted by HTTP status, not gRPC code)
  std::string message;  // the status message when not OK
  // Generation RPCs (Chat: summed over the stream's turns).
  bool generation = false;
  std::string finish_reason;  // last finish reason
  int turns = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;
  int image_rows = 0;       // prompt rows that came from images
  int audio_rows = 0;       // prompt rows that came from audio clips
  int series_rows = 0;      // prompt rows that came from time series
  int forecast_rounds = 0;  // Forecast: model runs
  absl::Duration queue_time, time_to_first_token = absl::InfiniteDuration(), total_time;
};

// Things a caller identity has open (Chat streams, requests in flight), bounded: RESOURCE_EXHAUSTED
// above the limit. Thread-safe.
class PerOwnerLimit {
 public:
  // One counted thing: the count drops when the hold is destroyed (or reset). Movable; an empty
  // hold counts nothing. Must not outlive its PerOwnerLimit.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept { *this = std::move(other); }
    Hold& operator=(Hold&& other) noexcept;
    ~Hold() { reset(); }
    void reset();
    explicit operator bool() const { return limit_ != nullptr; }

   private:
    friend class PerOwnerLimit;
    Hold(PerOwnerLimit* limit, std::string owner) : limit_(limit), owner_(std::move(owner)) {}
    PerOwnerLimit* limit_ = nullptr;
    std::string owner_;
  };

  // `limit` 0 = unbounded; `option` names the flag in errors, `what` the things counted ("Chat
  // streams open"), `reason` the refusal's reason ("TOO_MANY_STREAMS").
  PerOwnerLimit(int limit, std::string option, std::string what, std::string reason)
      : limit_(limit),
        option_(std::move(option)),
        what_(std::move(what)),
        reason_(std::move(reason)) {}
  // Counts one more for `owner`, or RESOURCE_EXHAUSTED (the reason given above) naming the limit;
  // the count is unchanged then. `own_limit`: the caller's own (token file), instead of the
  // server's (0 = unbounded).
  absl::StatusOr<Hold> Acquire(const std::string& owner,
                               std::optional<int> own_limit = std::nullopt);
  int open(const std::string& owner) const;

 private:
  void Release(const std::string& owner);

  const int limit_;
  const std::string option_, what_, reason_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, int> open_;  // owners with at least one
};

struct ServingContext {
  const ServerOptions* options = nullptr;
  const Authenticator* auth = nullptr;
  Metrics* metrics = nullptr;
  Logger* log = nullptr;

  // Set once by ModelServer after loading, before `loaded` turns true (release/acquire).
  Model* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  Scheduler* scheduler = nullptr;
  encoders::EncoderPool* media_pool = nullptr;  // set when the model has any encoder
  // Set when the model forecasts (its head and normalisation; the encoder runs in media_pool).
  const encoders::TimeSeriesPipeline* series = nullptr;
  TranslationContext translation;
  PrefixCache* prefix_cache = nullptr;           // set when --prefix-cache-entries > 0
  SharedSessionTier* shared_sessions = nullptr;  // set with --shared-sessions
  // Drawn at start-up; the first 32 bits of every session id this process makes
  // (GetModelInfo.session_routing_hint; clients route a session's calls by it).
  uint32_t session_routing_hint = 0;
  std::atomic<bool> loaded{false};
  std::atomic<bool> ready{false};  // readiness (loaded, warmed up, not draining)
  int64_t loaded_at_unix = 0;      // when the model was loaded (GET /v1/models "created")

  // Generate streams and Forecast calls alive (drain waits for them).
  std::atomic<int> generate_streams{0};
  // Chat reactors alive. Their OnDone posts a session deletion to the scheduler, so the scheduler
  // is destroyed only once this is zero (decremented as the very last step of OnDone).
  std::atomic<int> chat_reactors{0};
  // Chat streams and requests in flight per identity (ServerOptions::max_chat_streams_per_owner,
  // max_requests_per_owner, and the callers' own limits); set before serving.
  std::unique_ptr<PerOwnerLimit> chat_streams, requests;

  // OK once the engine is loaded; UNAVAILABLE with RetryInfo before.
  absl::Status CheckLoaded() const;
  // Authentication and the loaded check of every engine RPC: the caller identity, or the error.
  absl::StatusOr<std::string> Admit(const grpc::ServerContextBase& call) const;
  // What the token file says about caller `owner` (nothing without one).
  CallerLimits LimitsOf(const std::string& owner) const;
  // Every request that reaches the engine (a Generate or HTTP completion, a Chat turn, a
  // Forecast) passes here first: INVALID_ARGUMENT naming `priority` when it is above what the
  // caller may ask (its max-priority, else --max-request-priority), else its count among the
  // caller's requests in flight, held until the request is done, or RESOURCE_EXHAUSTED
  // (TOO_MANY_REQUESTS) over the caller's limit.
  absl::StatusOr<PerOwnerLimit::Hold> AdmitRequest(const std::string& owner, int priority) const;
  // A new Chat stream of `owner`, counted until the hold goes, or RESOURCE_EXHAUSTED
  // (TOO_MANY_STREAMS) over the caller's limit.
  absl::StatusOr<PerOwnerLimit::Hold> AdmitChatStream(const std::string& owner) const;
  // The request id for logs: the x-request-id metadata, else `given`, else a random one.
  std::string RequestId(const grpc::ServerContextBase& call, const std::string& given) const;
  // The largest request this server accepts (INVALID_ARGUMENT naming `field` above it).
  absl::Status CheckSize(size_t bytes, absl::string_view field) const;
  // One log line per request and the per-method, per-code counter. Thread-safe.
  void RecordRpc(const RpcRecord& r) const;
  // RecordRpc of a stream that ends with `status` (filled into *r).
  void RecordFinish(RpcRecord* r, const grpc::Status& status) const;
  // Before a request or command uses session `id` of `owner`: when this server does not have it
  // and the shared tier does (another replica handed it off, or with write-through, holds its
  // latest state), takes it from there and imports it under the same id; with write-through, a
  // local copy that another replica has resumed since is deleted and replaced the same way.
  // `then` runs once, on another thread unless the answer is immediate: OK (the session is local,
  // or nowhere: the caller's own NOT_FOUND follows) or the import's error. A tier outage is OK
  // here (counted and logged by the tier): the server serves what it has.
  void LocalizeSession(SessionId id, const std::string& owner,
                       std::function<void(absl::Status)> then) const;
  // Whether LocalizeSession has work to do for `id` (a shared tier, and the session not here or
  // the tier in write-through).
  bool MustConsultTier(SessionId id, const std::string& owner) const;
  // With write-through, after a call changed session `id` (a turn, or a new session) and before
  // its answer: stores its state in the shared tier. `then` runs once, on another thread unless
  // there is nothing to do: OK (stored; or not, in an outage, counted and logged, or the session
  // is gone: the call's own answer says why) or ABORTED when another replica resumed the session
  // meanwhile (this server's copy is deleted).
  void PersistSession(SessionId id, const std::string& owner,
                      std::function<void(absl::Status)> then) const;
  // The sink of an engine request on the caller's session `id`: with write-through, the finish
  // reaches `inner` only after PersistSession (a failed store ends it as an error, ABORTED);
  // else `inner` itself. The store's answer may come on any thread: `inner` must not rely on the
  // scheduler thread.
  std::shared_ptr<StreamSink> PersistingSink(SessionId id, const std::string& owner,
                                             std::shared_ptr<StreamSink> inner) const;
  // Whether PersistSession stores anything (a shared tier in write-through).
  bool PersistsSessions() const {
    return shared_sessions != nullptr && shared_sessions->write_through();
  }
  // With write-through, after session `id` was deleted here: deletes it from the shared tier.
  void ForgetSession(SessionId id, const std::string& owner) const;
  // PersistSession chains under way (the shared tier is stopped only once this is zero).
  mutable std::atomic<int> persisting{0};
  // Finishes a unary call (from any thread) with its log line; `owner` "" before admission.
  void FinishUnary(grpc::CallbackServerContext* call, grpc::ServerUnaryReactor* reactor,
                   absl::string_view method, const std::string& owner,
                   const absl::Status& status) const;
};

}  // namespace modrwkv::server
