#include "server/http/engine_calls.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "engine/base/status_macros.h"
#include "server/serving_context.h"

namespace modrwkv::server::http {

struct EngineCalls::State {
  ServingContext* ctx = nullptr;
  int n = 0;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<ChoiceEvent> events;
  int finishes_delivered = 0;          // through Next
  std::vector<RequestId> ids;          // 0 = not submitted (yet)
  std::vector<bool> finished;          // a FinishEvent was queued for the choice
  std::vector<EngineRequest> pending;  // while the media encode
  std::vector<PendingMedia> media;
  encoders::JobId job = 0;
  bool cancelled = false;
  absl::Time encode_started;
  absl::Duration encode_wait = absl::ZeroDuration();
  MediaRows rows;
  // Choices that share one prefill (see LaunchForked): the sessions made for them (choice i runs
  // on sessions[i]; each is deleted as its choice ends), the prefill's request and its cost, which
  // every choice's FinishEvent includes.
  bool forked = false;
  bool fork_failed = false;  // FailForked ran: late fork callbacks only delete their session
  std::string owner;
  std::vector<SessionId> sessions;
  RequestId prefix_id = 0;
  int prefix_prompt_tokens = 0;
  absl::Duration prefix_time = absl::ZeroDuration();

  void Push(ChoiceEvent e) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (e.finish) finished[e.choice] = true;
      events.push_back(std::move(e));
    }
    cv.notify_all();
  }

  // Ends every choice that has no engine request yet with `reason` and `status`.
  void FailUnsubmitted(EndReason reason, const absl::Status& status) {
    std::vector<int> choices;
    {
      std::lock_guard<std::mutex> l(mu);
      for (int i = 0; i < n; ++i) {
        if (ids[i] == 0 && !finished[i]) choices.push_back(i);
      }
    }
    for (int i : choices) {
      FinishEvent f;
      f.reason = reason;
      f.status = status;
      Push(ChoiceEvent{i, std::nullopt, std::move(f)});
    }
  }
  // The same for an error status (CANCELLED ends them as cancelled).
  void FailUnsubmitted(const absl::Status& st) {
    FailUnsubmitted(
        st.code() == absl::StatusCode::kCancelled ? EndReason::kCancelled : EndReason::kError, st);
  }
};

namespace {

class ChoiceSink final : public StreamSink {
 public:
  ChoiceSink(std::shared_ptr<EngineCalls::State> state, int choice)
      : state_(std::move(state)), choice_(choice) {}
  void OnTokens(TokenEvent event) override {
    state_->Push(ChoiceEvent{choice_, std::move(event), std::nullopt});
  }
  void OnFinish(FinishEvent event) override {
    std::optional<SessionId> session;
    {
      std::lock_guard<std::mutex> l(state_->mu);
      if (state_->forked && choice_ < static_cast<int>(state_->sessions.size())) {
        session = state_->sessions[choice_];
      }
    }
    if (session)
      state_->ctx->scheduler->DeleteSession(*session, state_->owner, [](absl::Status) {});
    state_->Push(ChoiceEvent{choice_, std::nullopt, std::move(event)});
  }

 private:
  const std::shared_ptr<EngineCalls::State> state_;
  const int choice_;
};

// Ends a forked launch that failed before its choices ran: deletes the sessions no choice runs on
// and ends those choices with `reason` / `status`.
void FailForked(const std::shared_ptr<EngineCalls::State>& s, EndReason reason,
                const absl::Status& status) {
  std::vector<SessionId> unused;
  {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->fork_failed) return;
    s->fork_failed = true;
    for (size_t i = 0; i < s->sessions.size(); ++i) {
      if (i >= s->ids.size() || s->ids[i] == 0) unused.push_back(s->sessions[i]);
    }
  }
  for (SessionId id : unused) s->ctx->scheduler->DeleteSession(id, s->owner, [](absl::Status) {});
  // The prefill's own end (cancelled, deadline, error) is every choice's.
  s->FailUnsubmitted(reason, reason == EndReason::kError && status.ok()
                                 ? absl::InternalError("the shared prefill ended early")
                                 : status);
}

// Submits every choice's request. The first refusal cancels those already submitted and is
// returned (their FinishEvents still arrive).
absl::Status SubmitAll(const std::shared_ptr<EngineCalls::State>& s,
                       std::vector<EngineRequest> requests) {
  for (int i = 0; i < s->n; ++i) {
    absl::StatusOr<RequestId> id =
        s->ctx->scheduler->Submit(std::move(requests[i]), std::make_shared<ChoiceSink>(s, i));
    if (!id.ok()) {
      std::vector<RequestId> submitted;
      {
        std::lock_guard<std::mutex> l(s->mu);
        submitted.assign(s->ids.begin(), s->ids.begin() + i);
      }
      for (RequestId r : submitted) s->ctx->scheduler->Cancel(r);
      return id.status();
    }
    bool cancel;
    {
      std::lock_guard<std::mutex> l(s->mu);
      s->ids[i] = *id;
      cancel = s->cancelled;
    }
    if (cancel) s->ctx->scheduler->Cancel(*id);
  }
  return absl::OkStatus();
}

// Whether n choices can share one prefill: more than one, no session of the request's own, and a
// prompt of two rows or more that ends in a token (the row each choice feeds itself).
bool Forkable(const std::vector<EngineRequest>& requests) {
  if (requests.size() < 2 || requests[0].session) return false;
  const std::vector<InputRows>& prompt = requests[0].prompt;
  if (prompt.empty() || prompt.back().tokens.empty()) return false;
  size_t rows = 0;
  for (const InputRows& p : prompt) rows += p.tokens.empty() ? 1 : p.tokens.size();
  return rows >= 2;
}

// The choices once the prefill is in sessions[0]: the others fork it, then all are submitted.
void SubmitForked(const std::shared_ptr<EngineCalls::State>& s) {
  std::vector<EngineRequest> requests;
  {
    std::lock_guard<std::mutex> l(s->mu);
    requests = std::move(s->pending);
    s->pending.clear();
    for (int i = 0; i < s->n; ++i) requests[i].session = s->sessions[i];
  }
  const absl::Status st = SubmitAll(s, std::move(requests));
  if (!st.ok()) FailForked(s, EndReason::kError, st);
}

// Hears the shared prefill end; forks its session for every other choice.
class PrefixSink final : public StreamSink {
 public:
  explicit PrefixSink(std::shared_ptr<EngineCalls::State> state) : s_(std::move(state)) {}
  void OnTokens(TokenEvent) override {}
  void OnFinish(FinishEvent e) override {
    // A hidden-state request that prefilled its whole prompt ends with kLength.
    if (e.reason != EndReason::kLength || !e.status.ok()) return FailForked(s_, e.reason, e.status);
    SessionId root;
    {
      std::lock_guard<std::mutex> l(s_->mu);
      s_->prefix_prompt_tokens = e.prompt_tokens;
      s_->prefix_time = e.total_time;
      root = s_->sessions[0];
    }
    for (int i = 1; i < s_->n; ++i) {
      s_->ctx->scheduler->ForkSession(root, s_->owner, [s = s_](absl::StatusOr<SessionInfo> info) {
        bool all = false, failed = false;
        {
          std::lock_guard<std::mutex> l(s->mu);
          failed = s->fork_failed;
          if (info.ok() && !failed) s->sessions.push_back(info->id);
          all = static_cast<int>(s->sessions.size()) == s->n;
        }
        if (failed) {
          if (info.ok()) s->ctx->scheduler->DeleteSession(info->id, s->owner, [](absl::Status) {});
          return;
        }
        if (!info.ok()) return FailForked(s, EndReason::kError, info.status());
        if (all) SubmitForked(s);
      });
    }
  }

 private:
  const std::shared_ptr<EngineCalls::State> s_;
};

// n choices from one prefill: the prompt but its last token is prefilled once into a session
// (a hidden-state request: no token is sampled), the session is forked for each other choice, and
// every choice feeds the last token on its own session and samples from there. The engine is
// batch- and chunking-invariant, so each choice is bit for bit what it would be alone.
absl::Status LaunchForked(const std::shared_ptr<EngineCalls::State>& s,
                          std::vector<EngineRequest> requests) {
  EngineRequest prefix = requests[0];
  const int32_t last = prefix.prompt.back().tokens.back();
  prefix.prompt.back().tokens.pop_back();
  if (prefix.prompt.back().tokens.empty()) prefix.prompt.pop_back();
  prefix.output = RequestOutput::kHiddenState;
  for (EngineRequest& r : requests) r.prompt = {InputRows{{last}, {}}};
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->forked = true;
    s->owner = prefix.owner;
    s->pending = std::move(requests);
  }
  s->ctx->scheduler->CreateSession(
      s->owner, [s, prefix = std::move(prefix)](absl::StatusOr<SessionInfo> info) mutable {
        absl::Status st = info.status();
        bool cancelled = false;
        if (st.ok()) {
          std::lock_guard<std::mutex> l(s->mu);
          s->sessions.push_back(info->id);
          cancelled = s->cancelled;
        }
        if (cancelled) return FailForked(s, EndReason::kCancelled, absl::OkStatus());
        if (st.ok()) {
          prefix.session = info->id;
          absl::StatusOr<RequestId> id =
              s->ctx->scheduler->Submit(std::move(prefix), std::make_shared<PrefixSink>(s));
          if (id.ok()) {
            std::lock_guard<std::mutex> l(s->mu);
            s->prefix_id = *id;
            cancelled = s->cancelled;
          }
          if (id.ok() && cancelled) s->ctx->scheduler->Cancel(*id);
          st = id.status();
        }
        if (!st.ok()) FailForked(s, EndReason::kError, st);
      });
  return absl::OkStatus();
}

absl::Status Launch(const std::shared_ptr<EngineCalls::State>& s,
                    std::vector<EngineRequest> requests) {
  if (Forkable(requests)) return LaunchForked(s, std::move(requests));
  return SubmitAll(s, std::move(requests));
}

void OnMediaEncoded(const std::shared_ptr<EngineCalls::State>& s, EncodedMedia rows) {
  absl::Status st = rows.status();
  std::vector<EngineRequest> requests;
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->job = 0;
    s->encode_wait = absl::Now() - s->encode_started;
    if (st.ok() && s->cancelled) st = absl::CancelledError("cancelled");
    if (st.ok()) {
      const int n_embd = s->ctx->model->config().n_embd;
      for (EngineRequest& r : s->pending) {
        st = FillMediaRows(s->media, *rows, n_embd, &r);
        if (!st.ok()) break;
      }
      s->rows = CountMediaRows(s->media, *rows);
      requests = std::move(s->pending);
    }
    s->pending.clear();
    s->media.clear();
  }
  if (st.ok()) {
    s->ctx->metrics->encoder_observer()->OnRequestRows(s->rows.image, s->rows.audio,
                                                       s->rows.series);
    st = Launch(s, std::move(requests));
  }
  if (!st.ok()) s->FailUnsubmitted(st);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EngineCalls>> EngineCalls::Start(ServingContext* ctx,
                                                                std::vector<EngineRequest> requests,
                                                                std::vector<PendingMedia> media) {
  auto s = std::make_shared<State>();
  s->ctx = ctx;
  s->n = static_cast<int>(requests.size());
  s->ids.assign(s->n, 0);
  s->finished.assign(s->n, false);
  std::unique_ptr<EngineCalls> calls(new EngineCalls(s));
  if (media.empty()) {
    MODRWKV_RETURN_IF_ERROR(Launch(s, std::move(requests)));
    return calls;
  }
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->pending = std::move(requests);
    s->media = media;
    s->encode_started = absl::Now();
  }
  // The pool may call back before EncodeMedia returns (cache hits): the job id is stored after.
  MODRWKV_ASSIGN_OR_RETURN(encoders::JobId job, EncodeMedia(ctx, media, [s](EncodedMedia rows) {
                             OnMediaEncoded(s, std::move(rows));
                           }));
  bool cancel;
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->job = s->pending.empty() ? 0 : job;  // already back when the requests moved on
    cancel = s->cancelled;
  }
  if (cancel && job != 0) ctx->media_pool->Cancel(job);
  return calls;
}

EngineCalls::~EngineCalls() { Cancel(); }

std::optional<ChoiceEvent> EngineCalls::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> l(state_->mu);
  if (state_->finishes_delivered == state_->n) return std::nullopt;
  const bool ready = state_->cv.wait_for(l, absl::ToChronoMilliseconds(timeout),
                                         [&] { return !state_->events.empty(); });
  if (!ready) return std::nullopt;
  ChoiceEvent e = std::move(state_->events.front());
  state_->events.pop_front();
  if (e.finish) {
    ++state_->finishes_delivered;
    AddEncodeWait(state_->encode_wait + state_->prefix_time, &*e.finish);
    e.finish->prompt_tokens += state_->prefix_prompt_tokens;
  }
  return e;
}

bool EngineCalls::done() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->finishes_delivered == state_->n;
}

void EngineCalls::Cancel() {
  std::vector<RequestId> ids;
  encoders::JobId job;
  {
    std::lock_guard<std::mutex> l(state_->mu);
    state_->cancelled = true;
    for (int i = 0; i < state_->n; ++i) {
      if (state_->ids[i] != 0 && !state_->finished[i]) ids.push_back(state_->ids[i]);
    }
    job = state_->job;
    if (state_->prefix_id != 0) ids.push_back(state_->prefix_id);
  }
  if (job != 0) state_->ctx->media_pool->Cancel(job);
  for (RequestId id : ids) state_->ctx->scheduler->Cancel(id);
}

absl::Duration EngineCalls::encode_wait() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->encode_wait;
}

MediaRows EngineCalls::media_rows() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->rows;
}

}  // namespace modrwkv::server::http
