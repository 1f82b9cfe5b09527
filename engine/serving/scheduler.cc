#include "engine/serving/scheduler.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <list>
#include <mutex>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"
#include "engine/serving/admission.h"
#include "engine/serving/batch_policy.h"
#include "engine/serving/request.h"
#include "engine/serving/state_blob.h"
#include "engine/serving/state_pool.h"
#include "engine/serving/worker_thread.h"
#include "engine/text/token_output.h"

namespace modrwkv {

using serving_internal::PartRows;
using serving_internal::PromptCursor;
using serving_internal::Request;
using serving_internal::TakePromptRows;

std::string_view EndReasonName(EndReason r) {
  switch (r) {
    case EndReason::kStopToken:
      return "stop";
    case EndReason::kLength:
      return "length";
    case EndReason::kStopString:
      return "stop_string";
    case EndReason::kCancelled:
      return "cancelled";
    case EndReason::kDeadline:
      return "deadline";
    case EndReason::kError:
      return "error";
  }
  return "error";
}

absl::Status SchedulerOptions::Validate(int model_slots) const {
  if (max_running < 1 || max_running > model_slots) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_running must be in [1, %d] (the model's state slots), got %d",
                        model_slots, max_running));
  }
  if (max_step_tokens < 1) return absl::InvalidArgumentError("max_step_tokens must be >= 1");
  if (max_queued_requests < 0)
    return absl::InvalidArgumentError("max_queued_requests must be >= 0");
  if (max_queued_prompt_tokens < 1) {
    return absl::InvalidArgumentError("max_queued_prompt_tokens must be >= 1");
  }
  if (max_cold_sessions < 0) return absl::InvalidArgumentError("max_cold_sessions must be >= 0");
  if (max_sessions_per_owner < 0) {
    return absl::InvalidArgumentError("max_sessions_per_owner must be >= 0");
  }
  if (session_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("session_ttl must be positive");
  }
  if (priority_aging < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("priority_aging must be >= 0");
  }
  return absl::OkStatus();
}

class Scheduler::Impl {
 public:
  using Command = std::function<void(bool run)>;

  Impl(Model* model, const Tokenizer* tok, const SchedulerOptions& opts, SchedulerObserver* obs)
      : model_(model),
        tok_(tok),
        opts_(opts),
        obs_(obs ? obs : &null_observer_),
        pool_(model, PoolOptions(opts), obs_) {
    policy_.max_step_tokens = opts.max_step_tokens;
    policy_.min_prefill_rows = std::min(32, opts.max_step_tokens);
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  StatePoolOptions PoolOptions(const SchedulerOptions& o) {
    StatePoolOptions p;
    p.max_cold_sessions = o.max_cold_sessions;
    p.max_sessions_per_owner = o.max_sessions_per_owner;
    p.sessions_quota_of = o.sessions_quota_of;
    p.session_ttl = o.session_ttl;
    p.session_routing_hint = o.session_routing_hint;
    if (o.spill_session) {
      // Scheduler thread: the state is copied; its blob is encoded on the codec thread.
      p.spill = [this](SessionId id, const std::string& owner, std::vector<float> state,
                       int64_t tokens, int32_t pending_token) {
        StateBlobHeader h = BlobHeader();
        h.tokens = tokens;
        h.pending_token = pending_token;
        RunOnCodecThread([this, id, owner, h, state = std::move(state)] {
          opts_.spill_session(id, owner, EncodeStateBlob(h, state));
        });
      };
    }
    return p;
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    codec_.reset();  // runs the codec tasks still queued; they find the scheduler stopped
  }

  absl::StatusOr<RequestId> Submit(EngineRequest req, std::shared_ptr<StreamSink> sink) {
    MODRWKV_RETURN_IF_ERROR(ValidateEngineRequest(req, model_->config()));
    int rows = 0;
    for (const InputRows& p : req.prompt) rows += PartRows(p, model_->config().n_embd);
    auto r = std::make_unique<Request>();
    r->req = std::move(req);
    r->sink = std::move(sink);
    r->prompt_rows = rows;
    r->queued_rows = rows;
    r->submitted = absl::Now();
    // A wrong session id is the caller's error whatever the load, so it is answered first.
    if (r->req.session && !pool_.Knows(*r->req.session, r->req.owner)) {
      return WithReason(absl::NotFoundError(
                            absl::StrCat("session_id ", r->req.session->ToString(), " not found")),
                        reason::kSessionNotFound);
    }
    std::unique_lock<std::mutex> l(mu_);
    if (!engine_failed_.ok()) {
      l.unlock();
      obs_->OnAdmissionRejected("engine_failed");
      return EngineFailedError();
    }
    const QueueLoad load{queued_requests_, queued_tokens_, draining_ || stop_};
    std::string_view refused;
    if (absl::Status st = CheckQueueBounds(load, rows, opts_, &refused); !st.ok()) {
      l.unlock();
      obs_->OnAdmissionRejected(refused);
      return st;
    }
    r->id = ++next_id_;
    const RequestId id = r->id;
    ++queued_requests_;
    queued_tokens_ += rows;
    inbox_.push_back(std::move(r));
    l.unlock();
    cv_.notify_one();
    return id;
  }

  void Cancel(RequestId id) {
    {
      std::lock_guard<std::mutex> l(mu_);
      cancels_.push_back(id);
    }
    cv_.notify_one();
  }

  // `cmd(true)` runs on the scheduler thread between steps; once the scheduler has stopped,
  // `cmd(false)` runs instead (on the stopping or the calling thread) so every callback is called.
  void Post(Command cmd) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (exited_) {
        l.unlock();
        cmd(false);
        return;
      }
      commands_.push_back(std::move(cmd));
    }
    cv_.notify_one();
  }

  // Blob encoding and decoding (and their CRC-32C) run here, off the scheduler thread.
  void RunOnCodecThread(std::function<void()> task) { codec_->Run(std::move(task)); }

  void Drain() {
    std::lock_guard<std::mutex> l(mu_);
    draining_ = true;
  }

  SchedulerStats stats() const {
    std::lock_guard<std::mutex> l(mu_);
    return stats_;
  }

  // ---- session commands (scheduler thread) ----

  SessionInfo Info(const PooledSession& s) const {
    return SessionInfo{s.id, s.slot >= 0, s.busy, s.tokens, s.last_used};
  }

  static absl::Status Busy() {
    return WithReason(absl::FailedPreconditionError("session is in use by a running request"),
                      reason::kSessionBusy);
  }

  absl::StatusOr<SessionInfo> CreateSessionCmd(const std::string& owner,
                                               const InitialState* initial) {
    // A session from a state is an import of it (which checks its size).
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, initial ? pool_.Import(initial->state, 0, -1, owner)
                                                        : pool_.Create(owner));
    if (initial) obs_->OnInitialStateStart(initial->name);
    return Info(*s);
  }

  absl::StatusOr<SessionInfo> GetSessionCmd(SessionId id, const std::string& owner) {
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, pool_.Find(id, owner));
    return Info(*s);
  }

  absl::Status DeleteSessionCmd(SessionId id, const std::string& owner) {
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, pool_.Find(id, owner));
    if (s->busy) return Busy();
    pool_.Delete(s);
    return absl::OkStatus();
  }

  absl::StatusOr<SessionInfo> ForkSessionCmd(SessionId id, const std::string& owner) {
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * src, pool_.Find(id, owner));
    if (src->busy) return Busy();
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * dst, pool_.Fork(src));
    return Info(*dst);
  }

  // The session's state and blob header; encoded by the caller on the codec thread.
  absl::StatusOr<std::pair<StateBlobHeader, std::vector<float>>> ExportSessionCmd(
      SessionId id, const std::string& owner) {
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, pool_.Find(id, owner));
    if (s->busy) return Busy();
    MODRWKV_ASSIGN_OR_RETURN(StatePool::Snapshot snap, pool_.Export(s));
    StateBlobHeader h = BlobHeader();
    h.tokens = snap.tokens;
    h.pending_token = snap.pending_token;
    return std::make_pair(h, std::move(snap.state));
  }

  absl::StatusOr<SessionInfo> ImportSessionCmd(std::vector<float> state, const StateBlobHeader& h,
                                               const std::string& owner,
                                               std::optional<SessionId> id) {
    MODRWKV_ASSIGN_OR_RETURN(PooledSession * s,
                             pool_.Import(std::move(state), h.tokens, h.pending_token, owner, id));
    return Info(*s);
  }
  bool KnowsSession(SessionId id, const std::string& owner) const { return pool_.Knows(id, owner); }
  std::vector<std::pair<SessionId, std::string>> IdleSessionsCmd() const {
    return pool_.IdleSessions();
  }

  // Thread-safe (model config and info are immutable).
  StateBlobHeader BlobHeader() const {
    const ModelConfig& c = model_->config();
    StateBlobHeader h;
    h.model_fingerprint = model_->info().fingerprint;
    h.n_layer = c.n_layer;
    h.n_embd = c.n_embd;
    h.head_size = c.head_size;
    return h;
  }
  absl::StatusOr<StateBlobHeader> DecodeBlob(std::string_view blob,
                                             std::vector<float>* state) const {
    return DecodeStateBlob(blob, model_->config(), model_->info().fingerprint, state);
  }

 private:
  class NullObserver : public SchedulerObserver {};

  // ---- the loop (scheduler thread) ----

  void Loop() {
    while (true) {
      std::deque<std::unique_ptr<Request>> inbox;
      std::vector<RequestId> cancels;
      std::vector<Command> commands;
      bool stopping;
      {
        std::unique_lock<std::mutex> l(mu_);
        // Nothing runs and nothing waiting can be admitted now (the queue is empty, or its
        // head waits for a state slot that only an event can free): sleep until something
        // arrives. Requests left waiting by a full batch are admitted at once when the last
        // running one ends.
        const bool idle = running_.empty() && (waiting_.empty() || waiting_for_slot_);
        if (idle) {
          cv_.wait_for(l, std::chrono::seconds(1), [&] {
            return stop_ || !inbox_.empty() || !cancels_.empty() || !commands_.empty();
          });
        }
        stopping = stop_;
        inbox.swap(inbox_);
        cancels.swap(cancels_);
        commands.swap(commands_);
      }
      for (auto& r : inbox) Enqueue(std::move(r));
      for (auto& cmd : commands) cmd(true);
      if (stopping) break;  // Submit refuses once stop_ is set: nothing more arrives
      for (RequestId id : cancels) MarkCancelled(id);
      const absl::Time now = absl::Now();
      ExpireWaiting(now);
      ExpireRunning(now);
      pool_.Sweep(now);
      Admit();
      if (!running_.empty()) RunStep();
      PublishStats();
    }
    // Shutdown: whatever is left ends as cancelled (sessions back to their state before the
    // turn, as for any cancel), then later commands are refused.
    for (auto& r : running_) Finish(*r, EndReason::kCancelled, absl::OkStatus());
    running_.clear();
    for (auto& r : waiting_) {
      Dequeued(*r);
      FinishNow(*r, EndReason::kCancelled, absl::OkStatus());
    }
    waiting_.clear();
    std::vector<Command> late;
    {
      std::lock_guard<std::mutex> l(mu_);
      exited_ = true;
      late.swap(commands_);
    }
    for (auto& cmd : late) cmd(false);
  }

  // waiting_ is ordered by priority, highest first, and by arrival within a priority: a new
  // request goes after every waiting one of its priority or higher.
  void Enqueue(std::unique_ptr<Request> r) {
    auto at = waiting_.end();
    while (at != waiting_.begin() && (*std::prev(at))->req.priority < r->req.priority) --at;
    waiting_.insert(at, std::move(r));
  }

  void MarkCancelled(RequestId id) {
    for (auto& r : running_)
      if (r->id == id) r->cancelled = true;
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      if ((*it)->id == id) {
        Dequeued(**it);
        FinishNow(**it, EndReason::kCancelled, absl::OkStatus());
        waiting_.erase(it);
        return;
      }
    }
    // Running ones leave in ExpireRunning (frees the slot before the next step).
  }

  void Dequeued(const Request& r) {
    std::lock_guard<std::mutex> l(mu_);
    --queued_requests_;
    queued_tokens_ -= r.queued_rows;
  }

  void ExpireWaiting(absl::Time now) {
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (now >= (*it)->req.deadline) {
        Dequeued(**it);
        FinishNow(**it, EndReason::kDeadline, absl::OkStatus());
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void ExpireRunning(absl::Time now) {
    for (auto& r : running_) {
      if (r->cancelled) {
        Finish(*r, EndReason::kCancelled, absl::OkStatus());
      } else if (now >= r->req.deadline) {
        Finish(*r, EndReason::kDeadline, absl::OkStatus());
      }
    }
    RemoveFinished();
  }

  // Moves waiting requests into the batch while there is room, highest priority first; within
  // a priority, first come, first served, or with fair_callers the caller with the fewest
  // sequences in the batch first (NextToAdmit).
  void Admit() {
    if (EngineFailed()) {
      FailWaiting();
      return;
    }
    waiting_for_slot_ = false;
    if (waiting_.empty() || static_cast<int>(running_.size()) >= opts_.max_running) return;
    // Sequences in the batch per caller (keys view owners of requests alive until Admit ends).
    absl::flat_hash_map<std::string_view, int> in_batch;
    if (opts_.fair_callers) {
      for (const auto& r : running_) ++in_batch[r->req.owner];
    }
    const absl::Time now = absl::Now();
    while (!waiting_.empty() && static_cast<int>(running_.size()) < opts_.max_running) {
      const auto next = NextToAdmit(in_batch, now);
      Request& r = **next;
      absl::Status st = Prepare(r);
      if (st.code() == absl::StatusCode::kUnavailable) {  // no slot now; wait for one
        waiting_for_slot_ = true;
        break;
      }
      Dequeued(r);
      std::unique_ptr<Request> owned = std::move(*next);
      waiting_.erase(next);
      if (!st.ok()) {
        FinishNow(*owned, EndReason::kError, st);
        continue;
      }
      if (opts_.fair_callers) ++in_batch[owned->req.owner];
      running_.push_back(std::move(owned));
    }
  }

  // A request's priority as admission and the prefill rows see it: its own, plus one level for
  // every priority_aging since it was submitted (SchedulerOptions::priority_aging).
  int EffectivePriority(const Request& r, absl::Time now) const {
    if (opts_.priority_aging <= absl::ZeroDuration()) return r.req.priority;
    absl::Duration rest;
    const int64_t levels = absl::IDivDuration(std::max(now - r.submitted, absl::ZeroDuration()),
                                              opts_.priority_aging, &rest);
    // Far above any request's own priority (among requests that all waited this long the
    // queue's order decides).
    constexpr int64_t kMaxLevels = 1 << 20;
    return r.req.priority + static_cast<int>(std::min(levels, kMaxLevels));
  }

  // The waiting request to admit next: the earliest in the queue (by its own priority, then
  // arrival) of the highest effective priority, or with fair_callers of those the earliest whose
  // caller has the fewest sequences in the batch (`in_batch`). Without aging the queue's order
  // is the effective order: a scan of the head's priority, cut short by a caller with none.
  std::deque<std::unique_ptr<Request>>::iterator NextToAdmit(
      const absl::flat_hash_map<std::string_view, int>& in_batch, absl::Time now) {
    const bool aging = opts_.priority_aging > absl::ZeroDuration();
    auto best = waiting_.begin();
    if (!opts_.fair_callers && !aging) return best;
    auto share = [&](const Request& r) {
      if (!opts_.fair_callers) return 0;
      auto it = in_batch.find(r.req.owner);
      return it == in_batch.end() ? 0 : it->second;
    };
    int best_share = share(**best), level = EffectivePriority(**best, now);
    for (auto it = std::next(best); it != waiting_.end(); ++it) {
      if (!aging && (best_share == 0 || (*it)->req.priority != level)) break;
      const int l = EffectivePriority(**it, now);
      if (l < level) continue;
      if (const int s = share(**it); l > level || s < best_share) {
        best = it;
        best_share = s;
        level = l;
      }
    }
    return best;
  }

  // Gives the request a slot (its session's, or a fresh zeroed one) and its sampler.
  absl::Status Prepare(Request& r) {
    // Everything that can fail without side effects first.
    // A structured answer may end where its document may, at the request's stop tokens.
    if (r.req.sampling.constraint != nullptr) {
      r.req.sampling.constraint_end_tokens = r.req.stop.stop_token_ids;
    }
    auto sampler = Sampler::Create(r.req.sampling, model_->config().vocab_size);
    if (!sampler.ok()) return sampler.status();
    PooledSession* s = nullptr;
    if (r.req.session) {
      MODRWKV_ASSIGN_OR_RETURN(s, pool_.Find(*r.req.session, r.req.owner));
      if (s->busy) {
        return WithReason(absl::FailedPreconditionError(absl::StrCat(
                              "session_id ", s->id.ToString(), " is in use by another request")),
                          reason::kSessionBusy);
      }
      MODRWKV_RETURN_IF_ERROR(pool_.MakeHot(s));  // UNAVAILABLE: wait for a slot
      MODRWKV_RETURN_IF_ERROR(pool_.BeginTurn(s));
      r.slot = s->slot;
      r.session = s;
      s->busy = true;
      if (s->pending_token >= 0) {  // the token the last turn sampled but never fed
        r.req.prompt.insert(r.req.prompt.begin(), InputRows{{s->pending_token}, {}});
        ++r.prompt_rows;
      }
    } else {
      std::optional<int> slot = pool_.AcquireSlot(r.req.owner);
      if (!slot)
        return WithReason(absl::UnavailableError("no free state slot"), reason::kNoFreeSlot);
      const absl::Status st = r.req.initial_state
                                  ? model_->WriteSlot(*slot, r.req.initial_state->state)
                                  : model_->ResetSlot(*slot);
      if (!st.ok()) {
        pool_.ReleaseSlot(*slot);
        return st;
      }
      if (r.req.initial_state) obs_->OnInitialStateStart(r.req.initial_state->name);
      r.slot = *slot;
    }
    r.sampler = *std::move(sampler);
    for (const InputRows& p : r.req.prompt) r.sampler->AcceptPrompt(p.tokens);
    r.output = std::make_unique<TokenOutput>(tok_, r.req.stop, model_->config().vocab_size);
    return absl::OkStatus();
  }

  void RunStep() {
    std::vector<SequenceLoad> loads;
    loads.reserve(running_.size());
    absl::flat_hash_map<std::string_view, int> callers;  // owner -> SequenceLoad::caller
    const absl::Time now = absl::Now();
    for (auto& r : running_) {
      SequenceLoad& load = loads.emplace_back();
      load.prefill_remaining = r->prompt_rows - r->prompt_done;
      load.priority = EffectivePriority(*r, now);
      if (opts_.fair_callers && load.prefill_remaining > 0) {
        load.caller = callers.try_emplace(r->req.owner, callers.size()).first->second;
      }
    }
    const std::vector<StepSlice> plan = PlanStep(loads, policy_);
    std::vector<StepEntry> entries(plan.size());
    std::vector<Request*> reqs(plan.size());
    std::vector<PromptCursor> cursors(plan.size());
    int rows = 0;
    const absl::Time start = absl::Now();
    for (size_t i = 0; i < plan.size(); ++i) {
      Request& r = *running_[plan[i].sequence];
      reqs[i] = &r;
      StepEntry& e = entries[i];
      e.slot = r.slot;
      e.sampler = r.sampler.get();
      cursors[i] = {r.part, r.offset, r.prompt_done};
      if (r.prompt_done < r.prompt_rows) {
        TakePromptRows(r, plan[i].rows, model_->config().n_embd, &e);
        if (r.prompt_done < r.prompt_rows) {
          e.output = StepOutput::kNone;
        } else {
          e.output = r.req.output == RequestOutput::kHiddenState ? StepOutput::kHidden
                                                                 : StepOutput::kSample;
        }
      } else {
        r.decode_input[0] = r.last_token;
        e.inputs = {InputRowsView::Tokens(r.decode_input)};
        e.output = StepOutput::kSample;
      }
      if (r.started == absl::InfinitePast()) r.started = start;
      rows += plan[i].rows;
    }
    const absl::Status st = model_->Step(entries, &results_);
    const absl::Time end = absl::Now();
    obs_->OnStep(static_cast<int>(entries.size()), rows, end - start);
    if (!st.ok()) {
      OnStepFailed(st, reqs, cursors);
      return;
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].output == StepOutput::kSample) OnToken(*reqs[i], results_[i], end);
      if (entries[i].output == StepOutput::kHidden) {
        const absl::Span<const float> h = results_[i].hidden;
        reqs[i]->hidden_state.assign(h.begin(), h.end());
        Finish(*reqs[i], EndReason::kLength, absl::OkStatus());
      }
    }
    RemoveFinished();
  }

  // The backend's message is for the operator (observer); clients get a plain INTERNAL. An error
  // tagged with its entry touched no slot: only that request fails, the others rewind their
  // prompt cursors and run again next step.
  void OnStepFailed(const absl::Status& st, const std::vector<Request*>& reqs,
                    const std::vector<PromptCursor>& cursors) {
    obs_->OnStepError(st);
    const absl::Status client = WithReason(
        absl::InternalError("internal error while running the model; the request was stopped"),
        reason::kInternal);
    const std::optional<int> entry = StepEntryOf(st);
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (entry && static_cast<size_t>(*entry) != i) {
        Request& r = *reqs[i];
        r.part = cursors[i].part;
        r.offset = cursors[i].offset;
        r.prompt_done = cursors[i].prompt_done;
        continue;
      }
      Finish(*reqs[i], EndReason::kError, client);
    }
    RemoveFinished();
    if (absl::Status health = model_->Health(); !health.ok()) FailEngine(health);
  }

  bool EngineFailed() const {
    std::lock_guard<std::mutex> l(mu_);
    return !engine_failed_.ok();
  }

  static absl::Status EngineFailedError() {
    return WithReason(absl::UnavailableError("the model's device failed; this replica cannot serve "
                                             "(readiness is off): retry on another replica"),
                      reason::kEngineFailed);
  }

  // The backend is gone for good: everything running or waiting ends with the error, Submit
  // refuses from now on, and what is still in the inbox ends in Admit.
  void FailEngine(const absl::Status& health) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!engine_failed_.ok()) return;
      engine_failed_ = health;
    }
    obs_->OnEngineFailed(health);
    for (auto& r : running_) Finish(*r, EndReason::kError, EngineFailedError());
    RemoveFinished();
    FailWaiting();
  }

  void FailWaiting() {
    for (auto& r : waiting_) {
      Dequeued(*r);
      FinishNow(*r, EndReason::kError, EngineFailedError());
    }
    waiting_.clear();
  }

  void OnToken(Request& r, const StepResult& res, absl::Time now) {
    const int32_t tok = res.token;
    ++r.generated;
    if (r.first_token == absl::InfinitePast()) {
      r.first_token = now;
      obs_->OnFirstToken(now - r.submitted);
    } else {
      obs_->OnInterTokenLatency(now - r.last_token_time);
    }
    r.last_token_time = now;
    r.last_token = tok;
    // A structured answer ends as soon as its document is complete.
    TokenOutput::Result out = r.output->Push(tok, r.sampler->constraint_complete());
    TokenEvent ev;
    if (out.token_emitted) {
      ev.tokens.push_back(tok);
      if (r.req.sampling.logprobs_top_n >= 0) ev.logprobs.push_back(res.sample);
    }
    ev.text = std::move(out.text);
    if (!ev.tokens.empty() || !ev.text.empty()) r.sink->OnTokens(std::move(ev));
    switch (out.stop) {
      case StopReason::kNone:
        break;
      case StopReason::kStopString:
        Finish(r, EndReason::kStopString, absl::OkStatus());
        break;
      case StopReason::kStopToken:
      case StopReason::kComplete:
        Finish(r, EndReason::kStopToken, absl::OkStatus());
        break;
      case StopReason::kMaxTokens:
        Finish(r, EndReason::kLength, absl::OkStatus());
        break;
    }
  }

  // Ends a running request: its sink hears it, its slot or session is released. The request is
  // removed from running_ by RemoveFinished.
  void Finish(Request& r, EndReason reason, absl::Status status) {
    if (r.slot < 0) return;  // already finished
    if (PooledSession* s = r.session) {
      const bool prompt_complete = r.prompt_done == r.prompt_rows;
      if (!prompt_complete || reason == EndReason::kError) {
        // Never leave half a prompt in a session: back to exactly what it was before (or, when
        // the model cannot even do that, the session is marked lost: StatePool::RollBack).
        (void)pool_.RollBack(s);
      } else {
        pool_.EndTurn(s);
        s->tokens += r.prompt_rows + std::max(0, r.generated - 1);
        s->pending_token = r.generated > 0 ? r.last_token : -1;
      }
      s->busy = false;
      s->last_used = absl::Now();
    } else {
      pool_.ReleaseSlot(r.slot);
    }
    r.slot = -1;
    FinishNow(r, reason, std::move(status));
  }

  void FinishNow(Request& r, EndReason reason, absl::Status status) {
    FinishEvent e;
    e.reason = reason;
    e.status = std::move(status);
    e.hidden_state = std::move(r.hidden_state);
    e.prompt_tokens = r.prompt_rows;
    e.generated_tokens = r.generated;
    const absl::Time now = absl::Now();
    e.queue_time = (r.started == absl::InfinitePast() ? now : r.started) - r.submitted;
    e.time_to_first_token = r.first_token == absl::InfinitePast() ? absl::InfiniteDuration()
                                                                  : r.first_token - r.submitted;
    e.total_time = now - r.submitted;
    obs_->OnFinish(e);
    r.sink->OnFinish(std::move(e));
    r.sink.reset();
  }

  void RemoveFinished() {
    const size_t before = running_.size();
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [](const std::unique_ptr<Request>& r) { return r->slot < 0; }),
                   running_.end());
    // Their slots are free: a waiting request that found none may find one now.
    if (running_.size() != before) waiting_for_slot_ = false;
  }

  void PublishStats() {
    SchedulerStats s;
    s.running = static_cast<int>(running_.size());
    s.waiting = static_cast<int>(waiting_.size());
    s.slots_total = pool_.slots_total();
    s.slots_used = pool_.slots_used();
    const StatePool::TierStats tiers = pool_.Tiers();
    s.sessions_hot = tiers.hot;
    s.sessions_cold = tiers.cold;
    s.cold_tier_bytes = tiers.host_bytes;
    s.model = model_->counters();
    std::lock_guard<std::mutex> l(mu_);
    s.waiting += static_cast<int>(inbox_.size());
    s.queued_prompt_tokens = queued_tokens_;
    s.draining = draining_;
    stats_ = s;
  }

  Model* const model_;
  const Tokenizer* const tok_;
  const SchedulerOptions opts_;
  NullObserver null_observer_;
  SchedulerObserver* const obs_;
  BatchPolicyOptions policy_;

  // Shared with other threads, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Request>> inbox_;
  std::vector<RequestId> cancels_;
  std::vector<Command> commands_;
  bool stop_ = false, draining_ = false;
  absl::Status engine_failed_;  // set once, by FailEngine
  bool exited_ = false;         // the loop has ended: commands are refused
  int queued_requests_ = 0;
  int64_t queued_tokens_ = 0;
  RequestId next_id_ = 0;
  SchedulerStats stats_;

  // Scheduler thread only.
  std::deque<std::unique_ptr<Request>> waiting_;
  // The last Admit stopped at a request that found no slot, and no running request has ended
  // since (only an event can free one: the loop may sleep).
  bool waiting_for_slot_ = false;
  std::vector<std::unique_ptr<Request>> running_;
  StatePool pool_;
  std::vector<StepResult> results_;
  std::unique_ptr<WorkerThread> codec_ = std::make_unique<WorkerThread>();
  std::thread thread_;
};

// ---- Scheduler ----

Scheduler::Scheduler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scheduler::~Scheduler() = default;

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Model* model,
                                                             const Tokenizer* tokenizer,
                                                             const SchedulerOptions& options,
                                                             SchedulerObserver* observer) {
  if (!model || !tokenizer)
    return absl::InvalidArgumentError("scheduler needs a model and a tokenizer");
  MODRWKV_RETURN_IF_ERROR(options.Validate(model->num_slots()));
  auto impl = std::make_unique<Impl>(model, tokenizer, options, observer);
  impl->Start();
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(impl)));
}

absl::StatusOr<RequestId> Scheduler::Submit(EngineRequest request,
                                            std::shared_ptr<StreamSink> sink) {
  return impl_->Submit(std::move(request), std::move(sink));
}
void Scheduler::Cancel(RequestId id) { impl_->Cancel(id); }
void Scheduler::Drain() { impl_->Drain(); }
SchedulerStats Scheduler::stats() const { return impl_->stats(); }

namespace {
absl::Status Stopped() { return absl::UnavailableError("the scheduler has stopped"); }
}  // namespace

void Scheduler::CreateSession(std::string owner, SessionCallback done,
                              std::shared_ptr<const InitialState> initial) {
  Impl* impl = impl_.get();
  impl->Post([impl, owner = std::move(owner), done = std::move(done),
              initial = std::move(initial)](bool run) {
    done(run ? impl->CreateSessionCmd(owner, initial.get()) : Stopped());
  });
}
void Scheduler::GetSession(SessionId id, std::string owner, SessionCallback done) {
  Impl* impl = impl_.get();
  impl->Post([impl, id, owner = std::move(owner), done = std::move(done)](bool run) {
    done(run ? impl->GetSessionCmd(id, owner) : Stopped());
  });
}
void Scheduler::DeleteSession(SessionId id, std::string owner,
                              std::function<void(absl::Status)> done) {
  Impl* impl = impl_.get();
  impl->Post([impl, id, owner = std::move(owner), done = std::move(done)](bool run) {
    done(run ? impl->DeleteSessionCmd(id, owner) : Stopped());
  });
}
void Scheduler::ForkSession(SessionId id, std::string owner, SessionCallback done) {
  Impl* impl = impl_.get();
  impl->Post([impl, id, owner = std::move(owner), done = std::move(done)](bool run) {
    done(run ? impl->ForkSessionCmd(id, owner) : Stopped());
  });
}
void Scheduler::ExportSession(SessionId id, std::string owner,
                              std::function<void(absl::StatusOr<std::string>)> done) {
  Impl* impl = impl_.get();
  impl->Post([impl, id, owner = std::move(owner), done = std::move(done)](bool run) mutable {
    if (!run) return done(Stopped());
    auto snap = impl->ExportSessionCmd(id, owner);
    if (!snap.ok()) return done(std::move(snap).status());
    // The copy is taken; encoding and its checksum happen off the scheduler thread.
    impl->RunOnCodecThread([snap = *std::move(snap), done = std::move(done)] {
      done(EncodeStateBlob(snap.first, snap.second));
    });
  });
}
void Scheduler::ImportSession(std::string blob, std::string owner, SessionCallback done,
                              std::optional<SessionId> id) {
  Impl* impl = impl_.get();
  impl->RunOnCodecThread([impl, blob = std::move(blob), owner = std::move(owner),
                          done = std::move(done), id]() mutable {
    std::vector<float> state;
    absl::StatusOr<StateBlobHeader> h = impl->DecodeBlob(blob, &state);
    if (!h.ok()) return done(std::move(h).status());
    std::string().swap(blob);
    impl->Post([impl, h = *h, state = std::move(state), owner = std::move(owner),
                done = std::move(done), id](bool run) mutable {
      done(run ? impl->ImportSessionCmd(std::move(state), h, owner, id) : Stopped());
    });
  });
}

bool Scheduler::KnowsSession(SessionId id, const std::string& owner) const {
  return impl_->KnowsSession(id, owner);
}

void Scheduler::IdleSessions(
    std::function<void(absl::StatusOr<std::vector<std::pair<SessionId, std::string>>>)> done) {
  Impl* impl = impl_.get();
  impl->Post([impl, done = std::move(done)](bool run) {
    if (!run) return done(Stopped());
    done(impl->IdleSessionsCmd());
  });
}

}  // namespace modrwkv
