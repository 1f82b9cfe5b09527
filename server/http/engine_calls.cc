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

  void Push(ChoiceEvent e) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (e.finish) finished[e.choice] = true;
      events.push_back(std::move(e));
    }
    cv.notify_all();
  }

  // Ends every choice that has no engine request with `st` (kCancelled when it is CANCELLED).
  void FailUnsubmitted(const absl::Status& st) {
    std::vector<int> choices;
    {
      std::lock_guard<std::mutex> l(mu);
      for (int i = 0; i < n; ++i) {
        if (ids[i] == 0 && !finished[i]) choices.push_back(i);
      }
    }
    for (int i : choices) {
      FinishEvent f;
      f.reason =
          st.code() == absl::StatusCode::kCancelled ? EndReason::kCancelled : EndReason::kError;
      f.status = st;
      Push(ChoiceEvent{i, std::nullopt, std::move(f)});
    }
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
    state_->Push(ChoiceEvent{choice_, std::nullopt, std::move(event)});
  }

 private:
  const std::shared_ptr<EngineCalls::State> state_;
  const int choice_;
};

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
    st = SubmitAll(s, std::move(requests));
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
    MODRWKV_RETURN_IF_ERROR(SubmitAll(s, std::move(requests)));
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
    AddEncodeWait(state_->encode_wait, &*e.finish);
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
