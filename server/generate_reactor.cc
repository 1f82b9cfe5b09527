#include "server/generate_reactor.h"

#include "engine/base/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

GenerateReactor::GenerateReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                                 const pb::GenerateRequest* request)
    : ctx_(ctx),
      call_(call),
      sink_(std::make_shared<ReactorSink<GenerateReactor>>(this)),
      outbox_(static_cast<size_t>(ctx->options->stream_buffer_bytes)) {
  ctx_->generate_streams.fetch_add(1);
  record_.method = "Generate";
  record_.peer = call_->peer();
  record_.request_id = ctx_->RequestId(*call_, request->request_id());
  call_->AddInitialMetadata("x-request-id", record_.request_id);
  absl::Status st = Submit(*request);
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

absl::Status GenerateReactor::Submit(const pb::GenerateRequest& request) {
  MODRWKV_ASSIGN_OR_RETURN(record_.owner, ctx_->Admit(*call_));
  MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request.ByteSizeLong(), "input"));
  std::vector<PendingMedia> media;
  MODRWKV_ASSIGN_OR_RETURN(EngineRequest engine_request,
                           ToEngineRequest(request, ctx_->translation, call_->deadline(), &media));
  engine_request.owner = record_.owner;
  engine_request.request_id = record_.request_id;
  if (media.empty()) return SubmitToEngine(std::move(engine_request));
  {
    std::lock_guard<std::mutex> l(mu_);
    pending_ = std::move(engine_request);
    media_ = media;
    encode_started_ = absl::Now();
  }
  // The pool may call back before EncodeMedia returns (cache hits): the job id is stored after.
  MODRWKV_ASSIGN_OR_RETURN(
      encoders::JobId job, EncodeMedia(ctx_, media, [sink = sink_](EncodedMedia rows) {
        sink->Run([&](GenerateReactor* r) { r->OnMediaEncoded(std::move(rows)); });
      }));
  bool cancel;
  {
    std::lock_guard<std::mutex> l(mu_);
    media_job_ = job;
    cancel = media_cancelled_;
  }
  if (cancel) ctx_->media_pool->Cancel(job);
  return absl::OkStatus();
}

void GenerateReactor::OnMediaEncoded(EncodedMedia rows) {
  EngineRequest request;
  absl::Status st = rows.status();
  {
    std::lock_guard<std::mutex> l(mu_);
    media_job_ = 0;
    encode_wait_ = absl::Now() - encode_started_;
    if (st.ok() && (outbox_.client_gone() || media_cancelled_))
      st = absl::CancelledError("cancelled");
    if (st.ok()) {
      st = FillMediaRows(media_, *rows, ctx_->model->config().n_embd, &pending_);
      request = std::move(pending_);
      const MediaRows n = CountMediaRows(media_, *rows);
      record_.image_rows = n.image;
      record_.audio_rows = n.audio;
      record_.series_rows = n.series;
      ctx_->metrics->encoder_observer()->OnRequestRows(n.image, n.audio, n.series);
    }
    media_.clear();
  }
  if (st.ok()) st = SubmitToEngine(std::move(request));
  if (!st.ok()) FailBeforeEngine(st);
}

absl::Status GenerateReactor::SubmitToEngine(EngineRequest engine_request) {
  MODRWKV_ASSIGN_OR_RETURN(RequestId id, ctx_->scheduler->Submit(std::move(engine_request), sink_));
  bool cancel;
  {
    std::lock_guard<std::mutex> l(mu_);
    engine_id_ = id;
    cancel = outbox_.overflowed() || outbox_.client_gone();  // happened before we knew the id
  }
  if (cancel) ctx_->scheduler->Cancel(id);
  return absl::OkStatus();
}

void GenerateReactor::CancelEngine() {
  RequestId id;
  encoders::JobId job;
  {
    std::lock_guard<std::mutex> l(mu_);
    id = engine_id_;
    job = media_job_;
    media_cancelled_ = true;
  }
  if (job != 0) ctx_->media_pool->Cancel(job);
  if (id != 0) ctx_->scheduler->Cancel(id);
}

void GenerateReactor::OnEngineTokens(TokenEvent event) {
  bool overflow_now;
  {
    std::lock_guard<std::mutex> l(mu_);
    overflow_now = outbox_.AppendTokens(event);
  }
  if (overflow_now) {
    ctx_->metrics->OnStreamOverflow();
    CancelEngine();
    return;
  }
  Pump();
}

void GenerateReactor::OnEngineFinish(FinishEvent event) {
  {
    std::lock_guard<std::mutex> l(mu_);
    AddEncodeWait(encode_wait_, &event);
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
      r->mutable_usage()->set_image_rows(record_.image_rows);
      r->mutable_usage()->set_audio_rows(record_.audio_rows);
      r->mutable_usage()->set_series_rows(record_.series_rows);
      r->set_request_id(record_.request_id);
      if (!st.ok()) r->set_error_message(std::string(st.message()));
      outbox_.Push(std::move(result));
    }
    record_.generation = true;
    record_.finish_reason = overflowed ? "error" : std::string(EndReasonName(event.reason));
    record_.prompt_tokens = event.prompt_tokens;
    record_.generated_tokens = event.generated_tokens;
    record_.queue_time = event.queue_time;
    record_.time_to_first_token = event.time_to_first_token;
    record_.total_time = event.total_time;
    engine_done_ = true;
    outbox_.End(ToGrpcStatus(st));
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
