#include "server/serving_context.h"

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "server/metrics.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

PerOwnerLimit::Hold& PerOwnerLimit::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    reset();
    limit_ = std::exchange(other.limit_, nullptr);
    owner_ = std::move(other.owner_);
  }
  return *this;
}

void PerOwnerLimit::Hold::reset() {
  if (limit_ != nullptr) std::exchange(limit_, nullptr)->Release(owner_);
}

absl::StatusOr<PerOwnerLimit::Hold> PerOwnerLimit::Acquire(const std::string& owner,
                                                           std::optional<int> own_limit) {
  const int limit = own_limit.value_or(limit_);
  std::lock_guard<std::mutex> l(mu_);
  int& n = open_[owner];
  if (limit > 0 && n >= limit) {
    if (n == 0) open_.erase(owner);
    const std::string who = owner.empty() ? "anonymous callers" : absl::StrCat("caller ", owner);
    const std::string which = own_limit.has_value() ? std::string("its own limit (the token file)")
                                                    : absl::StrCat("the limit (", option_, ")");
    return WithReason(absl::ResourceExhaustedError(
                          absl::StrFormat("%s already %s %d %s, %s; retry later", who,
                                          owner.empty() ? "have" : "has", n, what_, which)),
                      reason_);
  }
  ++n;
  return Hold(this, owner);
}

void PerOwnerLimit::Release(const std::string& owner) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = open_.find(owner);
  if (it == open_.end()) return;
  if (--it->second <= 0) open_.erase(it);
}

int PerOwnerLimit::open(const std::string& owner) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = open_.find(owner);
  return it == open_.end() ? 0 : it->second;
}

absl::Status ServingContext::CheckLoaded() const {
  if (loaded.load(std::memory_order_acquire)) return absl::OkStatus();
  if (metrics) metrics->OnServerRejected("loading");
  return WithRetryDelay(
      WithReason(absl::UnavailableError("the model is still loading; retry shortly"), "LOADING"),
      absl::Seconds(2));
}

absl::StatusOr<std::string> ServingContext::Admit(const grpc::ServerContextBase& call) const {
  MODRWKV_ASSIGN_OR_RETURN(std::string owner, auth->Identify(call));
  MODRWKV_RETURN_IF_ERROR(CheckLoaded());
  return owner;
}

CallerLimits ServingContext::LimitsOf(const std::string& owner) const {
  return auth != nullptr ? auth->LimitsOf(owner) : CallerLimits{};
}

absl::StatusOr<PerOwnerLimit::Hold> ServingContext::AdmitRequest(const std::string& owner,
                                                                 int priority) const {
  const CallerLimits limits = LimitsOf(owner);
  const int cap = limits.max_priority.value_or(options->max_request_priority);
  if (priority > cap) {
    return InvalidField(
        "priority",
        absl::StrFormat("priority %d is outside [%d, %d] (%s)", priority, kMinRequestPriority, cap,
                        limits.max_priority ? "the caller's max-priority in the token file"
                                            : "max-request-priority"));
  }
  absl::StatusOr<PerOwnerLimit::Hold> hold = requests->Acquire(owner, limits.max_requests);
  if (!hold.ok() && metrics) metrics->OnServerRejected("caller_requests");
  return hold;
}

absl::StatusOr<PerOwnerLimit::Hold> ServingContext::AdmitChatStream(
    const std::string& owner) const {
  absl::StatusOr<PerOwnerLimit::Hold> hold =
      chat_streams->Acquire(owner, LimitsOf(owner).max_chat_streams);
  if (!hold.ok() && metrics) metrics->OnServerRejected("caller_streams");
  return hold;
}

std::string ServingContext::RequestId(const grpc::ServerContextBase& call,
                                      const std::string& given) const {
  const auto& md = call.client_metadata();
  auto it = md.find("x-request-id");
  if (it != md.end() && it->second.size() > 0 && it->second.size() <= 128) {
    return std::string(it->second.data(), it->second.size());
  }
  if (!given.empty()) return given.substr(0, 128);
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
}

absl::Status ServingContext::CheckSize(size_t bytes, absl::string_view field) const {
  if (bytes <= static_cast<size_t>(options->max_message_bytes)) return absl::OkStatus();
  return WithReason(
      InvalidField(field, absl::StrFormat("%s: the request is %d bytes, over this server's limit "
                                          "of %d bytes (max-message-bytes)",
                                          field, bytes, options->max_message_bytes)),
      "MESSAGE_TOO_LARGE");
}

void ServingContext::RecordRpc(const RpcRecord& r) const {
  if (metrics && r.http_status != 0) {
    metrics->OnHttpDone(r.method, r.http_status);
  } else if (metrics) {
    metrics->OnRpcDone(r.method, r.code);
  }
  if (metrics && options->caller_metrics && !r.owner.empty()) {
    metrics->OnCallerRequest(r.owner, r.code, r.generation ? r.prompt_tokens : 0,
                             r.generation ? r.generated_tokens : 0);
  }
  if (!log) return;
  const LogLevel level = r.code == grpc::StatusCode::OK || r.code == grpc::StatusCode::CANCELLED ||
                                 r.code == grpc::StatusCode::NOT_FOUND ||
                                 r.code == grpc::StatusCode::INVALID_ARGUMENT
                             ? LogLevel::kInfo
                             : LogLevel::kWarn;
  if (!log->Enabled(level)) return;
  std::vector<Logger::Field> f;
  f.emplace_back("request_id", r.request_id);
  f.emplace_back("method", r.method);
  f.emplace_back("code", GrpcCodeName(r.code));
  if (r.http_status != 0) f.emplace_back("http_status", r.http_status);
  if (!r.owner.empty()) f.emplace_back("caller", r.owner);
  if (!r.peer.empty()) f.emplace_back("peer", r.peer);
  if (r.generation) {
    if (!r.finish_reason.empty()) f.emplace_back("finish", r.finish_reason);
    if (r.turns > 0) f.emplace_back("turns", r.turns);
    f.emplace_back("prompt_tokens", r.prompt_tokens);
    if (r.image_rows > 0) f.emplace_back("image_rows", r.image_rows);
    if (r.audio_rows > 0) f.emplace_back("audio_rows", r.audio_rows);
    if (r.series_rows > 0) f.emplace_back("series_rows", r.series_rows);
    if (r.forecast_rounds > 0) f.emplace_back("forecast_rounds", r.forecast_rounds);
    f.emplace_back("generated_tokens", r.generated_tokens);
    f.emplace_back("queue_ms", absl::ToDoubleMilliseconds(r.queue_time));
    if (r.time_to_first_token != absl::InfiniteDuration()) {
      f.emplace_back("ttft_ms", absl::ToDoubleMilliseconds(r.time_to_first_token));
    }
    f.emplace_back("total_ms", absl::ToDoubleMilliseconds(r.total_time));
  }
  if (!r.message.empty()) f.emplace_back("error", r.message);
  log->Log(level, "request", f);
}

void ServingContext::RecordFinish(RpcRecord* r, const grpc::Status& status) const {
  r->code = status.error_code();
  r->message = status.ok() ? "" : status.error_message();
  RecordRpc(*r);
}

void ServingContext::FinishUnary(grpc::CallbackServerContext* call,
                                 grpc::ServerUnaryReactor* reactor, absl::string_view method,
                                 const std::string& owner, const absl::Status& status) const {
  const grpc::Status st = ToGrpcStatus(status);
  RpcRecord r;
  r.method = method;
  r.request_id = RequestId(*call, "");
  r.owner = owner;
  r.peer = call->peer();
  r.code = st.error_code();
  r.message = st.error_message();
  RecordRpc(r);
  reactor->Finish(st);
}

bool ServingContext::MustConsultTier(SessionId id, const std::string& owner) const {
  return shared_sessions != nullptr &&
         (shared_sessions->write_through() || !scheduler->KnowsSession(id, owner));
}

namespace {

// Takes session `id` from the shared tier and imports it here under the same id (nothing there:
// OK, the caller's NOT_FOUND follows).
void Resume(SharedSessionTier* tier, Scheduler* sched, Metrics* m, SessionId id,
            const std::string& owner, std::function<void(absl::Status)> then) {
  tier->Take(id, owner,
             [=, then = std::move(then)](absl::StatusOr<std::optional<std::string>> blob) mutable {
               if (!blob.ok() || !blob->has_value()) return then(absl::OkStatus());
               // Moved out of Redis: put back if the import fails (write-through keeps it there).
               std::string copy = tier->write_through() ? std::string() : **blob;
               sched->ImportSession(
                   std::move(**blob), owner,
                   [=, copy = std::move(copy),
                    then = std::move(then)](absl::StatusOr<SessionInfo> info) mutable {
                     if (info.ok() || absl::IsAlreadyExists(info.status())) {
                       if (info.ok()) m->OnSharedSessions(Metrics::SharedSessionEvent::kResumed);
                       return then(absl::OkStatus());
                     }
                     if (!tier->write_through()) {
                       tier->Put(id, owner, std::move(copy), [](absl::Status) {});
                     }
                     then(info.status());
                   },
                   id);
             });
}

}  // namespace

void ServingContext::LocalizeSession(SessionId id, const std::string& owner,
                                     std::function<void(absl::Status)> then) const {
  if (!MustConsultTier(id, owner)) return then(absl::OkStatus());
  SharedSessionTier* tier = shared_sessions;
  Scheduler* sched = scheduler;
  Metrics* m = metrics;
  if (!sched->KnowsSession(id, owner)) return Resume(tier, sched, m, id, owner, std::move(then));
  // Write-through: the local copy serves while no other replica has resumed the session since.
  tier->Check(id, owner, [=, then = std::move(then)](absl::StatusOr<bool> current) mutable {
    if (!current.ok() || *current) return then(absl::OkStatus());  // an outage: serve it here
    sched->DeleteSession(id, owner, [=, then = std::move(then)](absl::Status st) mutable {
      if (!st.ok() && !absl::IsNotFound(st)) return then(st);  // busy with a request
      Resume(tier, sched, m, id, owner, std::move(then));
    });
  });
}

void ServingContext::PersistSession(SessionId id, const std::string& owner,
                                    std::function<void(absl::Status)> then) const {
  if (!PersistsSessions()) return then(absl::OkStatus());
  SharedSessionTier* tier = shared_sessions;
  Scheduler* sched = scheduler;
  Metrics* m = metrics;
  std::atomic<int>* count = &persisting;
  count->fetch_add(1);
  auto done = [count, m, t0 = absl::Now(), then = std::move(then)](const absl::Status& st) {
    m->OnSharedSessionStore(absl::Now() - t0);
    then(st);
    count->fetch_sub(1);
  };
  sched->ExportSession(id, owner, [=](absl::StatusOr<std::string> blob) {
    if (!blob.ok()) return done(absl::OkStatus());  // gone or lost: the call's answer says so
    tier->Put(id, owner, *std::move(blob), [=](absl::Status st) {
      if (!absl::IsAborted(st)) return done(absl::OkStatus());  // stored, or an outage
      sched->DeleteSession(id, owner, [=](absl::Status) { done(st); });
    });
  });
}

namespace {

class PersistingSinkImpl final : public StreamSink {
 public:
  PersistingSinkImpl(const ServingContext* ctx, SessionId session, std::string owner,
                     std::shared_ptr<StreamSink> inner)
      : ctx_(ctx), session_(session), owner_(std::move(owner)), inner_(std::move(inner)) {}
  void OnTokens(TokenEvent event) override { inner_->OnTokens(std::move(event)); }
  void OnFinish(FinishEvent event) override {
    ctx_->PersistSession(session_, owner_,
                         [inner = inner_, event = std::move(event)](absl::Status st) mutable {
                           if (!st.ok() && event.reason != EndReason::kError) {
                             event.reason = EndReason::kError;
                             event.status = std::move(st);
                           }
                           inner->OnFinish(std::move(event));
                         });
  }

 private:
  const ServingContext* const ctx_;
  const SessionId session_;
  const std::string owner_;
  const std::shared_ptr<StreamSink> inner_;
};

}  // namespace

std::shared_ptr<StreamSink> ServingContext::PersistingSink(
    SessionId id, const std::string& owner, std::shared_ptr<StreamSink> inner) const {
  if (!PersistsSessions()) return inner;
  return std::make_shared<PersistingSinkImpl>(this, id, owner, std::move(inner));
}

void ServingContext::ForgetSession(SessionId id, const std::string& owner) const {
  if (PersistsSessions()) shared_sessions->Remove(id, owner, {});
}

}  // namespace modrwkv::server
