#include "server/generate_reactor.h"

#include "engine/base/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

GenerateReactor::GenerateReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                                 const pb::GenerateRequest* request)
    : ctx_(ctx),
      call_(call),
      sink_(std::make_shared<ReactorHandle<GenerateReactor>>(this)),
      outbox_(static_cast<size_t>(ctx->options->stream_buffer_bytes)) {
  ctx_->generate_streams.fetch_add(1);
  record_.method = "Generate";
  record_.peer = call_->peer();
  record_.request_id = ctx_->RequestId(*call_, request->request_id());
  call_->AddInitialMetadata("x-request-id", record_.request_id);
  absl::Status st = Start(*request);
  if (!st.ok()) FailBeforeEngine(st);
}

void GenerateReactor::FailBeforeEngine(const absl::Status& st) {
  {
    std::lock_guard<std::mutex> l(mu_);
    engine_done_ = true;
    outbox_.End(ToGrpcStatus(st));
  }
  Pump();
}

absl::Status GenerateReactor::Start(const pb::GenerateRequest& request) {
  MODRWKV_ASSIGN_OR_RETURN(record_.owner, ctx_->Admit(*call_));
  MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request.ByteSizeLong(), "input"));
  std::vector<PendingMedia> media;
  MODRWKV_ASSIGN_OR_RETURN(EngineRequest engine_request,
                           ToEngineRequest(request, ctx_->translation, call_->deadline(), &media));
  MODRWKV_ASSIGN_OR_RETURN(const ChoicePlan plan, ToChoicePlan(request, ctx_->translation));
  engine_request.owner = record_.owner;
  engine_request.request_id = record_.request_id;
  {
    std::lock_guard<std::mutex> l(mu_);
    n_ = plan.n;
  }
  MODRWKV_ASSIGN_OR_RETURN(
      std::unique_ptr<EngineCalls> calls,
      EngineCalls::Start(ctx_, std::move(engine_request), plan, std::move(media),
                         [sink = sink_](ChoiceEvent e) {
                           sink->Run([&](GenerateReactor* r) { r->OnChoiceEvent(std::move(e)); });
                         }));
  EngineCalls* started = calls.get();
  bool cancel;
  {
    std::lock_guard<std::mutex> l(mu_);
    calls_ = std::move(calls);
    cancel = outbox_.overflowed() || outbox_.client_gone();  // happened before calls_ was set
  }
  if (cancel) started->Cancel();
  return absl::OkStatus();
}

void GenerateReactor::CancelEngine() {
  EngineCalls* calls;
  {
    std::lock_guard<std::mutex> l(mu_);
    calls = calls_.get();  // set once; destroyed only with the reactor
  }
  if (calls != nullptr) calls->Cancel();
}

void GenerateReactor::OnChoiceEvent(ChoiceEvent event) {
  if (event.finish) return OnFinish(std::move(event));
  bool overflow_now;
  {
    std::lock_guard<std::mutex> l(mu_);
    overflow_now = outbox_.AppendTokens(*event.tokens, event.choice);
  }
  if (overflow_now) {
    ctx_->metrics->OnStreamOverflow();
    CancelEngine();
    return;
  }
  Pump();
}

void GenerateReactor::OnFinish(ChoiceEvent e) {
  const int choice = e.choice;
  const FinishEvent& event = *e.finish;
  const MediaRows& rows = e.media_rows;
  {
    std::lock_guard<std::mutex> l(mu_);
    const bool overflowed = outbox_.overflowed();
    const bool grpc_deadline_passed = event.reason == EndReason::kDeadline &&
                                      std::chrono::system_clock::now() >= call_->deadline();
    absl::Status st = overflowed ? StreamOverflowError(ctx_->options->stream_buffer_bytes)
                                 : RpcStatusOf(event, grpc_deadline_passed);
    // A client that is gone or past its deadline cannot read a final message.
    if (st.code() != absl::StatusCode::kCancelled &&
        st.code() != absl::StatusCode::kDeadlineExceeded) {
      pb::GenerateResponse result;
      pb::GenerateResult* r = result.mutable_result();
      r->set_finish_reason(overflowed ? pb::FINISH_REASON_ERROR : ToProto(event.reason));
      FillUsage(event, r->mutable_usage());
      r->mutable_usage()->set_image_rows(rows.image);
      r->mutable_usage()->set_audio_rows(rows.audio);
      r->mutable_usage()->set_series_rows(rows.series);
      r->mutable_usage()->set_cached_tokens(e.cached_tokens);
      r->set_request_id(record_.request_id);
      r->set_choice(choice);
      if (!st.ok()) r->set_error_message(std::string(st.message()));
      outbox_.PushAfterChoice(choice, std::move(result));
    }
    record_.generation = true;
    record_.generated_tokens += event.generated_tokens;
    if (choice == 0) {  // every choice prefills the same prompt: counted once
      record_.finish_reason = overflowed ? "error" : std::string(EndReasonName(event.reason));
      record_.prompt_tokens = event.prompt_tokens;
      record_.queue_time = event.queue_time;
      record_.time_to_first_token = event.time_to_first_token;
      record_.total_time = event.total_time;
      record_.image_rows = rows.image;
      record_.audio_rows = rows.audio;
      record_.series_rows = rows.series;
    }
    if (end_.ok()) end_ = st;
    if (++finished_ == n_) {
      engine_done_ = true;
      outbox_.End(ToGrpcStatus(end_));
    }
  }
  Pump();
}

void GenerateReactor::Pump() {
  StreamOutbox<pb::GenerateResponse>::Step step;
  {
    std::lock_guard<std::mutex> l(mu_);
    step = outbox_.Next(/*may_finish=*/engine_done_);
  }
  outbox_.Issue(this, std::move(step),
                [this](const grpc::Status& st) { ctx_->RecordFinish(&record_, st); });
}

void GenerateReactor::OnWriteDone(bool ok) {
  bool gone;
  {
    std::lock_guard<std::mutex> l(mu_);
    gone = outbox_.WriteDone(ok);
  }
  if (gone) CancelEngine();
  Pump();
}

void GenerateReactor::OnCancel() {
  {
    std::lock_guard<std::mutex> l(mu_);
    outbox_.ClientGone();
  }
  CancelEngine();
  Pump();
}

void GenerateReactor::OnDone() {
  sink_->Detach();
  ServingContext* ctx = ctx_;
  delete this;
  ctx->generate_streams.fetch_sub(1);  // last: the server may be torn down after this
}

}  // namespace modrwkv::server
