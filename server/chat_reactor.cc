#include "server/chat_reactor.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {
namespace {

pb::ChatResponse Started(SessionId id, bool kept) {
  pb::ChatResponse m;
  m.mutable_started()->set_session_id(id.ToString());
  m.mutable_started()->set_kept(kept);
  return m;
}

}  // namespace

ChatReactor::ChatReactor(ServingContext* ctx, grpc::CallbackServerContext* call)
    : ctx_(ctx),
      call_(call),
      sink_(std::make_shared<ReactorSink<ChatReactor>>(this)),
      outbox_(static_cast<size_t>(ctx->options->stream_buffer_bytes)) {
  ctx_->chat_reactors.fetch_add(1);
  record_.method = "Chat";
  record_.peer = call_->peer();
  stream_id_ = ctx_->RequestId(*call_, "");
  record_.request_id = stream_id_;
  call_->AddInitialMetadata("x-request-id", stream_id_);
  absl::Status admitted = [&]() -> absl::Status {
    MODRWKV_ASSIGN_OR_RETURN(owner_, ctx_->Admit(*call_));
    record_.owner = owner_;
    MODRWKV_ASSIGN_OR_RETURN(stream_hold_, ctx_->AdmitChatStream(owner_));
    return absl::OkStatus();
  }();
  if (!admitted.ok()) {
    {
      std::lock_guard<std::mutex> l(mu_);
      outbox_.End(ToGrpcStatus(admitted));
    }
    Pump();
    return;
  }
  StartNextRead();
}

void ChatReactor::StartNextRead() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (outbox_.ending()) return;
    reading_ = true;  // Pump never finishes while a read is outstanding
  }
  StartRead(&request_);
}

void ChatReactor::OnReadDone(bool ok) {
  bool begin = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    reading_ = false;
    if (!ok) {
      // The client half-closed (or the call is cancelled: then it already ends CANCELLED).
      outbox_.End(grpc::Status::OK);
    } else if (!outbox_.ending()) {
      turn_busy_ = true;  // held until the engine finishes the turn or it fails before that
      begin = true;
    }
  }
  if (begin) {
    absl::Status st = BeginTurn();
    if (!st.ok()) FailTurn(st);
  }
  Pump();
}

void ChatReactor::FailTurn(const absl::Status& status) {
  std::lock_guard<std::mutex> l(mu_);
  turn_busy_ = false;
  turn_hold_.reset();
  // No ChatStarted for a refused turn. A session made for this stream that the client never
  // learned of is deleted even if it asked to keep it.
  if (started_ && own_session_) delete_session_at_end_ = true;
  started_.reset();
  outbox_.End(ToGrpcStatus(status));
}

absl::Status ChatReactor::BeginTurn() {
  MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request_.ByteSizeLong(), "text"));
  bool first;
  {
    std::lock_guard<std::mutex> l(mu_);
    first = first_turn_;
    first_turn_ = false;
  }
  if (!first && (request_.has_session_id() || request_.keep_session())) {
    return InvalidField(request_.has_session_id() ? "session_id" : "keep_session",
                        "session_id and keep_session may only be set on a stream's first message");
  }
  if (!first && !request_.initial_state().empty()) {
    return InvalidField("initial_state",
                        "initial_state may only be set on a stream's first message");
  }
  std::optional<SessionId> given;
  if (first && request_.has_session_id()) {
    MODRWKV_ASSIGN_OR_RETURN(given, ParseSessionId(request_.session_id(), "session_id"));
  }
  std::shared_ptr<const InitialState> initial;
  if (first) {
    MODRWKV_ASSIGN_OR_RETURN(
        initial, ResolveInitialState(ctx_->translation, request_.initial_state(), given.has_value(),
                                     "initial_state"));
  }
  // Validate the turn before any session exists.
  turn_media_.clear();
  MODRWKV_ASSIGN_OR_RETURN(
      turn_request_, ToEngineChatTurn(request_, given.value_or(SessionId{}), ctx_->translation,
                                      call_->deadline(), &turn_media_));
  {
    MODRWKV_ASSIGN_OR_RETURN(PerOwnerLimit::Hold hold,
                             ctx_->AdmitRequest(owner_, turn_request_.priority));
    std::lock_guard<std::mutex> l(mu_);
    turn_hold_ = std::move(hold);
  }
  if (!first) return SubmitTurn();
  if (given) {
    {
      std::lock_guard<std::mutex> l(mu_);
      session_ = *given;
      started_ = Started(*given, /*kept=*/true);
    }
    if (!ctx_->MustConsultTier(*given, owner_)) return SubmitTurn();
    // Another replica handed the session to the shared tier: it comes back first (turn_busy_
    // and the sink keep the reactor alive meanwhile, as for CreateSession below).
    ctx_->LocalizeSession(*given, owner_, [sink = sink_](absl::Status st) {
      sink->Run([&](ChatReactor* r) { r->OnSessionLocal(st); });
    });
    return absl::OkStatus();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    delete_session_at_end_ = !request_.keep_session();
  }
  // turn_busy_ keeps the stream from finishing until OnSessionCreated has run, and the sink
  // keeps OnDone from deleting the reactor while it runs.
  ctx_->scheduler->CreateSession(
      owner_,
      [sink = sink_](absl::StatusOr<SessionInfo> info) {
        sink->Run([&](ChatReactor* r) { r->OnSessionCreated(std::move(info)); });
      },
      std::move(initial));
  return absl::OkStatus();
}

void ChatReactor::OnSessionCreated(absl::StatusOr<SessionInfo> info) {
  absl::Status st;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!info.ok()) {
      st = info.status();
    } else {
      session_ = info->id;
      own_session_ = true;
      started_ = Started(info->id, /*kept=*/!delete_session_at_end_);
      if (outbox_.client_gone()) st = absl::CancelledError("cancelled");
    }
  }
  if (st.ok()) st = SubmitTurn();
  if (!st.ok()) FailTurn(st);
  Pump();
}

void ChatReactor::OnSessionLocal(absl::Status st) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (st.ok() && outbox_.client_gone()) st = absl::CancelledError("cancelled");
  }
  if (st.ok()) st = SubmitTurn();
  if (!st.ok()) FailTurn(st);
  Pump();
}

void ChatReactor::QueueStartedLocked() {
  if (!started_) return;
  outbox_.Push(*std::move(started_));
  started_.reset();
}

absl::Status ChatReactor::SubmitTurn() {
  {
    std::lock_guard<std::mutex> l(mu_);
    turn_rows_ = MediaRows();
    encode_wait_ = absl::ZeroDuration();
    encode_started_ = absl::Now();
  }
  if (turn_media_.empty()) return SubmitTurnToEngine();
  MODRWKV_ASSIGN_OR_RETURN(
      encoders::JobId job,
      EncodeMedia(ctx_, turn_media_, turn_request_.priority, owner_,
                  [sink = sink_](EncodedMedia rows) {
                    sink->Run([&](ChatReactor* r) { r->OnTurnMediaEncoded(std::move(rows)); });
                  }));
  bool cancel;
  {
    std::lock_guard<std::mutex> l(mu_);
    // The pool may have answered already (cache hits): then turn_media_ is empty.
    if (!turn_media_.empty()) media_job_ = job;
    cancel = !turn_media_.empty() && (outbox_.client_gone() || outbox_.overflowed());
  }
  if (cancel) ctx_->media_pool->Cancel(job);
  return absl::OkStatus();
}

void ChatReactor::OnTurnMediaEncoded(EncodedMedia rows) {
  absl::Status st = rows.status();
  {
    std::lock_guard<std::mutex> l(mu_);
    media_job_ = 0;
    encode_wait_ = absl::Now() - encode_started_;
    if (st.ok() && outbox_.client_gone()) st = absl::CancelledError("cancelled");
  }
  if (st.ok()) {
    st = FillMediaRows(turn_media_, *rows, ctx_->model->config().n_embd, &turn_request_);
  }
  if (st.ok()) {
    const MediaRows n = CountMediaRows(turn_media_, *rows);
    ctx_->metrics->encoder_observer()->OnRequestRows(n.image, n.audio);
    std::lock_guard<std::mutex> l(mu_);
    turn_rows_ = n;
    record_.image_rows += n.image;
    record_.audio_rows += n.audio;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    turn_media_.clear();
  }
  if (st.ok()) st = SubmitTurnToEngine();
  if (!st.ok()) FailTurn(st);
  Pump();
}

absl::Status ChatReactor::SubmitTurnToEngine() {
  EngineRequest r = std::move(turn_request_);
  int turn;
  bool kept;
  {
    std::lock_guard<std::mutex> l(mu_);
    r.session = session_;
    kept = !delete_session_at_end_;
    turn = ++turns_;
    turn_id_ = 0;
  }
  r.owner = owner_;
  r.request_id = absl::StrCat(stream_id_, ".", turn);
  // A kept session's turn is stored before its end reaches the reactor (write-through), outside
  // the reactor's handle: the store may answer on any thread.
  std::shared_ptr<StreamSink> sink = kept ? ctx_->PersistingSink(*r.session, owner_, sink_) : sink_;
  absl::StatusOr<RequestId> id = ctx_->scheduler->Submit(std::move(r), std::move(sink));
  bool cancel = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!id.ok()) return id.status();  // the caller fails the turn
    QueueStartedLocked();              // accepted (tokens that came first already queued it)
    if (turns_ == turn && turn_busy_) {
      turn_id_ = *id;
      cancel = outbox_.client_gone() || outbox_.overflowed();  // before we knew the id
    }
  }
  if (cancel) ctx_->scheduler->Cancel(*id);
  return absl::OkStatus();
}

void ChatReactor::CancelEngine() {
  RequestId id = 0;
  encoders::JobId job = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (turn_busy_) id = turn_id_;
    job = media_job_;
  }
  if (job != 0) ctx_->media_pool->Cancel(job);
  if (id != 0) ctx_->scheduler->Cancel(id);
}

void ChatReactor::OnEngineTokens(TokenEvent event) {
  bool overflow_now;
  {
    std::lock_guard<std::mutex> l(mu_);
    QueueStartedLocked();
    overflow_now = outbox_.AppendTokens(event);
  }
  if (overflow_now) {
    ctx_->metrics->OnStreamOverflow();
    CancelEngine();
    return;
  }
  Pump();
}

void ChatReactor::OnEngineFinish(FinishEvent event) {
  bool read_next = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    AddEncodeWait(encode_wait_, &event);
    QueueStartedLocked();
    turn_busy_ = false;
    turn_hold_.reset();
    outbox_.CloseChunk();
    const bool overflowed = outbox_.overflowed();
    const bool grpc_deadline_passed = event.reason == EndReason::kDeadline &&
                                      std::chrono::system_clock::now() >= call_->deadline();
    const absl::Status st = overflowed ? StreamOverflowError(ctx_->options->stream_buffer_bytes)
                                       : RpcStatusOf(event, grpc_deadline_passed);
    if (st.code() != absl::StatusCode::kCancelled &&
        st.code() != absl::StatusCode::kDeadlineExceeded) {
      pb::ChatResponse end;
      pb::TurnEnd* t = end.mutable_turn_end();
      t->set_finish_reason(overflowed ? pb::FINISH_REASON_ERROR : ToProto(event.reason));
      FillUsage(event, t->mutable_usage());
      t->mutable_usage()->set_image_rows(turn_rows_.image);
      t->mutable_usage()->set_audio_rows(turn_rows_.audio);
      t->set_request_id(absl::StrCat(stream_id_, ".", turns_));
      if (!st.ok()) t->set_error_message(std::string(st.message()));
      outbox_.Push(std::move(end));  // dropped if the client is gone
    }
    record_.generation = true;
    record_.finish_reason = overflowed ? "error" : std::string(EndReasonName(event.reason));
    record_.turns = turns_;
    record_.prompt_tokens += event.prompt_tokens;
    record_.generated_tokens += event.generated_tokens;
    record_.queue_time += event.queue_time;
    if (record_.time_to_first_token == absl::InfiniteDuration()) {
      record_.time_to_first_token = event.time_to_first_token;
    }
    record_.total_time += event.total_time;
    if (!st.ok()) {
      outbox_.End(ToGrpcStatus(st));
    } else if (!outbox_.ending()) {  // a client that is gone already ends the stream
      reading_ = read_next = true;
    }
  }
  if (read_next) StartRead(&request_);
  Pump();
}

void ChatReactor::Pump() {
  StreamOutbox<pb::ChatResponse>::Step step;
  {
    std::lock_guard<std::mutex> l(mu_);
    step = outbox_.Next(/*may_finish=*/!reading_ && !turn_busy_);
  }
  outbox_.Issue(this, std::move(step),
                [this](const grpc::Status& st) { ctx_->RecordFinish(&record_, st); });
}

void ChatReactor::OnWriteDone(bool ok) {
  bool gone;
  {
    std::lock_guard<std::mutex> l(mu_);
    gone = outbox_.WriteDone(ok);
  }
  if (gone) CancelEngine();
  Pump();
}

void ChatReactor::OnCancel() {
  {
    std::lock_guard<std::mutex> l(mu_);
    outbox_.ClientGone();
  }
  CancelEngine();
  Pump();
}

void ChatReactor::OnDone() {
  sink_->Detach();
  if (session_ && delete_session_at_end_ && ctx_->scheduler) {
    ctx_->scheduler->DeleteSession(*session_, owner_, [](absl::Status) {});
  }
  ServingContext* ctx = ctx_;
  delete this;
  ctx->chat_reactors.fetch_sub(1);  // last: the scheduler may be destroyed after this
}

}  // namespace modrwkv::server
