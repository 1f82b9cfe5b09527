#include "server/engine_calls.h"

#include <algorithm>
#include <mutex>

#include "engine/base/status_macros.h"
#include "server/prefix_cache.h"
#include "server/serving_context.h"

namespace modrwkv::server {

struct EngineCalls::State {
  ServingContext* ctx = nullptr;
  int n = 0;
  ChoiceEventFn on_event;

  mutable std::mutex mu;
  std::vector<RequestId> ids;          // 0 = not submitted (yet)
  std::vector<bool> finished;          // the choice's FinishEvent was delivered (or is on its way)
  std::vector<EngineRequest> pending;  // while the media encode
  std::vector<PendingMedia> media;
  encoders::JobId job = 0;
  bool cancelled = false;
  absl::Time encode_started;
  absl::Duration encode_wait = absl::ZeroDuration();
  MediaRows rows;
  // Choices that share one prefill (see LaunchShared): the sessions made for them (choice i runs
  // on sessions[i]; each is deleted as its choice ends), the prefill's request and its cost, which
  // every choice's FinishEvent includes.
  bool forked = false;
  bool fork_failed = false;  // FailForked ran: late fork callbacks only delete their session
  std::string owner;
  std::vector<SessionId> sessions;
  EngineRequest prefix;           // the shared rows, as a hidden-state request
  std::optional<SessionId> root;  // the prefix's session, when it is not sessions[0]
  std::string cache_key;          // "" = the prefix is not cached
  bool root_cached = false;       // root belongs to the prefix cache (never deleted here)
  bool miss_leader = false;       // this prefill is the one concurrent misses of the key wait for
  RequestId prefix_id = 0;
  int prefix_prompt_tokens = 0;  // prefilled (or found in the cache) for the choices
  int cached_tokens = 0;         // of those, found in the cache
  absl::Duration prefix_time = absl::ZeroDuration();
  bool refused = false;           // Start returned an error: no event is delivered
  PerOwnerLimit::Hold in_flight;  // one of the caller's requests in flight, until the last finish
  // Set before any other thread sees the state, never changed: read without `mu`.
  size_t prefix_parts = 0;  // ChoicePlan::prefix_parts: cached when long enough

  // Hands one event to the callback (outside the lock); a finish gets the request's shared
  // costs (media encoding, the shared prefill) added.
  void Deliver(ChoiceEvent e) {
    PerOwnerLimit::Hold done;  // released before the last finish is delivered
    {
      std::lock_guard<std::mutex> l(mu);
      if (refused) return;
      if (e.finish) {
        finished[e.choice] = true;
        if (std::all_of(finished.begin(), finished.end(), [](bool f) { return f; })) {
          done = std::move(in_flight);
        }
        AddEncodeWait(encode_wait + prefix_time, &*e.finish);
        e.finish->prompt_tokens += prefix_prompt_tokens;
        e.media_rows = rows;
        e.cached_tokens = cached_tokens;
      }
    }
    done.reset();
    on_event(std::move(e));
  }

  // Ends every choice that has no engine request yet with `reason` and `status`.
  void FailUnsubmitted(EndReason reason, const absl::Status& status) {
    std::vector<int> choices;
    {
      std::lock_guard<std::mutex> l(mu);
      for (int i = 0; i < n; ++i) {
        if (ids[i] == 0 && !finished[i]) {
          finished[i] = true;  // claimed here: no second finish for it
          choices.push_back(i);
        }
      }
    }
    for (int i : choices) {
      FinishEvent f;
      f.reason = reason;
      f.status = status;
      Deliver(ChoiceEvent::Finish(i, std::move(f)));
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
    state_->Deliver(ChoiceEvent::Tokens(choice_, std::move(event)));
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
    state_->Deliver(ChoiceEvent::Finish(choice_, std::move(event)));
  }

 private:
  const std::shared_ptr<EngineCalls::State> state_;
  const int choice_;
};

// Ends a shared-prefill launch that failed before its choices ran: deletes the sessions no choice
// runs on (and an uncached root) and ends those choices with `reason` / `status`.
void FailForked(const std::shared_ptr<EngineCalls::State>& s, EndReason reason,
                const absl::Status& status) {
  std::vector<SessionId> unused;
  bool end_miss;
  {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->fork_failed) return;
    s->fork_failed = true;
    end_miss = s->miss_leader;
    s->miss_leader = false;
    for (size_t i = 0; i < s->sessions.size(); ++i) {
      if (i >= s->ids.size() || s->ids[i] == 0) unused.push_back(s->sessions[i]);
    }
    if (s->root && !s->root_cached) unused.push_back(*s->root);
  }
  for (SessionId id : unused) s->ctx->scheduler->DeleteSession(id, s->owner, [](absl::Status) {});
  // Requests waiting for this prefill of their prefix prefill it themselves.
  if (end_miss) s->ctx->prefix_cache->EndMiss(s->cache_key, std::nullopt);
  // The prefill's own end (cancelled, deadline, error) is every choice's.
  s->FailUnsubmitted(reason, reason == EndReason::kError && status.ok()
                                 ? absl::InternalError("the shared prefill ended early")
                                 : status);
}

// Submits every choice's request. The first refusal cancels those already submitted and is
// returned (their FinishEvents still arrive). `callers_session`: the requests' session is the
// caller's (not a fork made here), so with write-through it is stored before the finish.
absl::Status SubmitAll(const std::shared_ptr<EngineCalls::State>& s,
                       std::vector<EngineRequest> requests, bool callers_session) {
  for (int i = 0; i < s->n; ++i) {
    std::shared_ptr<StreamSink> sink = std::make_shared<ChoiceSink>(s, i);
    if (callers_session && requests[i].session) {
      sink = s->ctx->PersistingSink(*requests[i].session, requests[i].owner, std::move(sink));
    }
    absl::StatusOr<RequestId> id = s->ctx->scheduler->Submit(std::move(requests[i]), sink);
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

// The choices once every one has its session: all are submitted.
void SubmitForked(const std::shared_ptr<EngineCalls::State>& s) {
  std::vector<EngineRequest> requests;
  {
    std::lock_guard<std::mutex> l(s->mu);
    requests = std::move(s->pending);
    s->pending.clear();
    for (int i = 0; i < s->n; ++i) {
      requests[i].session = s->sessions[i];  // a fork of the prefix's state,
      requests[i].initial_state.reset();     // which started from the initial state
    }
  }
  const absl::Status st = SubmitAll(s, std::move(requests), /*callers_session=*/false);
  if (!st.ok()) FailForked(s, EndReason::kError, st);
}

void StartPrefill(const std::shared_ptr<EngineCalls::State>& s);

// Forks the root for the next choice without a session (one at a time), then submits them all.
// A cached root the pool has dropped since (NOT_FOUND on the first fork) is prefilled again.
void ForkNext(const std::shared_ptr<EngineCalls::State>& s) {
  SessionId root;
  bool all;
  {
    std::lock_guard<std::mutex> l(s->mu);
    all = static_cast<int>(s->sessions.size()) == s->n;
    if (!all) root = s->root ? *s->root : s->sessions[0];
  }
  if (all) return SubmitForked(s);
  s->ctx->scheduler->ForkSession(root, s->owner, [s, root](absl::StatusOr<SessionInfo> info) {
    bool failed, dropped = false, cancelled;
    {
      std::lock_guard<std::mutex> l(s->mu);
      failed = s->fork_failed;
      cancelled = s->cancelled;
      if (info.ok() && !failed) s->sessions.push_back(info->id);
      dropped = !info.ok() && info.status().code() == absl::StatusCode::kNotFound &&
                s->root_cached && s->sessions.empty();
      if (dropped) {  // the pool evicted the cached prefix: prefill it cold
        s->root.reset();
        s->root_cached = false;
        s->cached_tokens = 0;
        s->prefix_prompt_tokens = 0;
      }
    }
    if (failed) {
      if (info.ok()) s->ctx->scheduler->DeleteSession(info->id, s->owner, [](absl::Status) {});
      return;
    }
    if (dropped) {
      s->ctx->prefix_cache->Erase(s->cache_key, root);
      return StartPrefill(s);
    }
    if (!info.ok()) return FailForked(s, EndReason::kError, info.status());
    if (cancelled) return FailForked(s, EndReason::kCancelled, absl::OkStatus());
    ForkNext(s);
  });
}

// Hears the shared prefill end: caches its session (the choices fork it) or gives it to choice 0.
class PrefixSink final : public StreamSink {
 public:
  explicit PrefixSink(std::shared_ptr<EngineCalls::State> state) : s_(std::move(state)) {}
  void OnTokens(TokenEvent) override {}
  void OnFinish(FinishEvent e) override {
    // A hidden-state request that prefilled its whole prompt ends with kLength.
    if (e.reason != EndReason::kLength || !e.status.ok()) return FailForked(s_, e.reason, e.status);
    std::vector<PrefixCache::Evicted> evicted;
    bool end_miss;
    std::optional<SessionId> cached;
    {
      std::lock_guard<std::mutex> l(s_->mu);
      s_->prefix_prompt_tokens = e.prompt_tokens;
      s_->prefix_time = e.total_time;
      if (!s_->cache_key.empty()) {
        evicted = s_->ctx->prefix_cache->Insert(s_->cache_key, *s_->root, s_->owner);
        s_->root_cached = true;
        for (const auto& v : evicted) {
          if (v.session == *s_->root) s_->root_cached = false;  // the cache keeps nothing
        }
        if (!s_->root_cached) {  // then the root is choice 0's, as without a cache
          s_->sessions.push_back(*s_->root);
          s_->root.reset();
        }
      }
      end_miss = s_->miss_leader;
      s_->miss_leader = false;
      if (s_->root_cached) cached = *s_->root;
    }
    // Requests that missed the same prefix meanwhile fork the cached state now.
    if (end_miss) s_->ctx->prefix_cache->EndMiss(s_->cache_key, cached);
    for (const auto& v : evicted) {
      if (s_->sessions.empty() || v.session != s_->sessions[0]) {
        s_->ctx->scheduler->DeleteSession(v.session, v.owner, [](absl::Status) {});
      }
    }
    ForkNext(s_);
  }

 private:
  const std::shared_ptr<EngineCalls::State> s_;
};

// The shared prefill's session exists (or could not be made): the prefix prefills into it.
void PrefillInto(const std::shared_ptr<EngineCalls::State>& s, absl::StatusOr<SessionInfo> info) {
  absl::Status st = info.status();
  bool cancelled = false;
  EngineRequest prefix;
  if (st.ok()) {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->cache_key.empty()) {
      s->sessions.push_back(info->id);
    } else {
      s->root = info->id;
    }
    cancelled = s->cancelled;
    prefix = s->prefix;
  }
  if (cancelled) return FailForked(s, EndReason::kCancelled, absl::OkStatus());
  if (st.ok()) {
    prefix.session = info->id;
    prefix.initial_state.reset();  // the session started from it
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
}

// Prefills the shared rows into a new session (starting from the request's initial state):
// choice 0's, or the cache's root.
void StartPrefill(const std::shared_ptr<EngineCalls::State>& s) {
  if (s->ctx->metrics && !s->cache_key.empty()) s->ctx->metrics->OnPrefixCache(false, 0);
  std::shared_ptr<const InitialState> initial;
  {
    std::lock_guard<std::mutex> l(s->mu);
    initial = s->prefix.initial_state;
  }
  s->ctx->scheduler->CreateSession(
      s->owner, [s](absl::StatusOr<SessionInfo> info) { PrefillInto(s, std::move(info)); },
      std::move(initial));
}

// The prefix's state is the cached session `root`: every choice forks it.
void UseCachedPrefix(const std::shared_ptr<EngineCalls::State>& s, SessionId root,
                     int prefix_rows) {
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->root = root;
    s->root_cached = true;
    s->cached_tokens = prefix_rows;
    s->prefix_prompt_tokens = prefix_rows;
  }
  if (s->ctx->metrics) s->ctx->metrics->OnPrefixCache(true, prefix_rows);
  ForkNext(s);
}

// Choices that share the prompt's first `shared_parts` parts (or, with 0, all but its last token):
// those rows are prefilled once into a session (a hidden-state request: no token is sampled) or
// found in the prefix cache, each choice forks it and prefills only the rest on its copy. The
// engine is batch- and chunking-invariant, so each choice is bit for bit what it would be alone.
absl::Status LaunchShared(const std::shared_ptr<EngineCalls::State>& s,
                          std::vector<EngineRequest> requests, size_t shared_parts) {
  EngineRequest prefix = requests[0];
  std::vector<InputRows> rest;
  if (shared_parts == 0) {
    rest = {InputRows{{prefix.prompt.back().tokens.back()}, {}}};
    prefix.prompt.back().tokens.pop_back();
    if (prefix.prompt.back().tokens.empty()) prefix.prompt.pop_back();
  } else {
    rest.assign(prefix.prompt.begin() + shared_parts, prefix.prompt.end());
    prefix.prompt.resize(shared_parts);
  }
  prefix.output = RequestOutput::kHiddenState;
  for (EngineRequest& r : requests) r.prompt = rest;
  std::optional<SessionId> hit;
  int prefix_rows = 0;
  for (const InputRows& p : prefix.prompt) prefix_rows += static_cast<int>(p.tokens.size());
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->forked = true;
    s->owner = prefix.owner;
    s->pending = std::move(requests);
    if (shared_parts > 0) {
      s->cache_key = PrefixCache::Key(
          prefix.owner, prefix.initial_state ? prefix.initial_state->name : "", prefix.prompt);
      hit = s->ctx->prefix_cache->Find(s->cache_key);
    }
    s->prefix = std::move(prefix);
  }
  if (shared_parts == 0) {
    StartPrefill(s);
  } else if (hit) {
    UseCachedPrefix(s, *hit, prefix_rows);
  } else {
    // The first of concurrent misses of this prefix prefills it; the others wait for its state
    // (then fork it as a hit), or prefill it themselves if that one fails or is not cached.
    const bool lead = s->ctx->prefix_cache->BeginMiss(
        s->cache_key, [s, prefix_rows](std::optional<SessionId> cached) {
          if (cached) return UseCachedPrefix(s, *cached, prefix_rows);
          StartPrefill(s);
        });
    if (lead) {
      {
        std::lock_guard<std::mutex> l(s->mu);
        s->miss_leader = true;
      }
      StartPrefill(s);
    }
  }
  return absl::OkStatus();
}

// The prompt parts the prefix cache may share: the plan's prefix when the cache is on, the
// request has no session of its own and the prefix is token rows worth a state.
size_t CachedPrefixParts(const ServingContext& ctx, size_t prefix_parts,
                         const EngineRequest& request) {
  if (prefix_parts == 0 || ctx.prefix_cache == nullptr || request.session ||
      request.prompt.size() <= prefix_parts) {
    return 0;
  }
  int64_t tokens = 0;
  for (size_t i = 0; i < prefix_parts; ++i) {
    if (request.prompt[i].tokens.empty()) return 0;
    tokens += static_cast<int64_t>(request.prompt[i].tokens.size());
  }
  return tokens >= ctx.options->prefix_cache_min_tokens ? prefix_parts : 0;
}

absl::Status Launch(const std::shared_ptr<EngineCalls::State>& s,
                    std::vector<EngineRequest> requests) {
  const size_t parts = CachedPrefixParts(*s->ctx, s->prefix_parts, requests[0]);
  if (parts > 0) return LaunchShared(s, std::move(requests), parts);
  if (Forkable(requests)) return LaunchShared(s, std::move(requests), 0);
  return SubmitAll(s, std::move(requests), /*callers_session=*/true);
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

// Encodes the media (then launches), or launches at once.
absl::Status Proceed(const std::shared_ptr<EngineCalls::State>& s,
                     std::vector<EngineRequest> requests, std::vector<PendingMedia> media) {
  if (media.empty()) return Launch(s, std::move(requests));
  const int priority = requests.front().priority;
  const std::string owner = requests.front().owner;
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->pending = std::move(requests);
    s->media = media;
    s->encode_started = absl::Now();
  }
  // The pool may call back before EncodeMedia returns (cache hits): the job id is stored after.
  MODRWKV_ASSIGN_OR_RETURN(encoders::JobId job,
                           EncodeMedia(s->ctx, media, priority, owner, [s](EncodedMedia rows) {
                             OnMediaEncoded(s, std::move(rows));
                           }));
  bool cancel;
  {
    std::lock_guard<std::mutex> l(s->mu);
    s->job = s->pending.empty() ? 0 : job;  // already back when the requests moved on
    cancel = s->cancelled;
  }
  if (cancel && job != 0) s->ctx->media_pool->Cancel(job);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<EngineCalls>> EngineCalls::Start(ServingContext* ctx,
                                                                EngineRequest request,
                                                                const ChoicePlan& plan,
                                                                std::vector<PendingMedia> media,
                                                                ChoiceEventFn on_event) {
  auto s = std::make_shared<State>();
  MODRWKV_ASSIGN_OR_RETURN(s->in_flight, ctx->AdmitRequest(request.owner, request.priority));
  s->ctx = ctx;
  s->on_event = std::move(on_event);
  s->prefix_parts = plan.prefix_parts;
  s->n = plan.n;
  s->ids.assign(s->n, 0);
  s->finished.assign(s->n, false);
  std::vector<EngineRequest> requests(s->n, request);
  for (int i = 1; i < s->n; ++i) {
    // Choices differ by their seed (the request's + i); without a seed each draws its own.
    if (request.sampling.seed) {
      requests[i].sampling.seed = *request.sampling.seed + i;
    } else {
      requests[i].sampling.seed.reset();
    }
  }
  std::unique_ptr<EngineCalls> calls(new EngineCalls(s));
  // A session that another replica handed to the shared tier comes back first; then it is as if
  // the request had just arrived, except that errors arrive as events.
  if (request.session && ctx->MustConsultTier(*request.session, request.owner)) {
    ctx->LocalizeSession(
        *request.session, request.owner,
        [s, requests = std::move(requests), media = std::move(media)](absl::Status st) mutable {
          {
            std::lock_guard<std::mutex> l(s->mu);
            if (st.ok() && s->cancelled) st = absl::CancelledError("cancelled");
          }
          if (st.ok()) st = Proceed(s, std::move(requests), std::move(media));
          if (!st.ok()) s->FailUnsubmitted(st);
        });
    return calls;
  }
  // A refusal here is the caller's answer: the cancelled choices' finishes are not delivered.
  if (absl::Status st = Proceed(s, std::move(requests), std::move(media)); !st.ok()) {
    std::lock_guard<std::mutex> l(s->mu);
    s->refused = true;
    return st;
  }
  return calls;
}

EngineCalls::~EngineCalls() { Cancel(); }

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

}  // namespace modrwkv::server
