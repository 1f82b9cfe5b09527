#include "server/chat_reactor.h"

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

ChatReactor::ChatReactor(ServingContext* ctx, grpc::CallbackServerContext* call)
    : ctx_(ctx), call_(call), sink_(std::make_shared<ReactorSink<ChatReactor>>(this)) {
  ctx_->chat_reactors.fetch_add(1);
  record_.method = "Chat";
  record_.peer = call_->peer();
  stream_id_ = ctx_->RequestId(*call_, "");
  record_.request_id = stream_id_;
  call_->AddInitialMetadata("x-request-id", stream_id_);
  absl::StatusOr<std::string> owner = ctx_->Admit(*call_);
  if (!owner.ok()) {
    EndWith(owner.status());
    Pump();
    return;
  }
  owner_ = *owner;
  record_.owner = owner_;
  StartNextRead();
}

void ChatReactor::StartNextRead() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (finish_called_ || client_gone_ || end_status_) return;
    reading_ = true;  // Pump never finishes while a read is outstanding
  }
  StartRead(&request_);
}

void ChatReactor::EndWith(const absl::Status& status) {
  std::lock_guard<std::mutex> l(mu_);
  if (!end_status_) end_status_ = ToGrpcStatus(status);
}

void ChatReactor::OnReadDone(bool ok) {
  {
    std::lock_guard<std::mutex> l(mu_);
    reading_ = false;
    if (!ok) {  // the client half-closed (or the call is cancelled): the conversation is over
      if (!end_status_) {
        end_status_ = client_gone_ ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")
                                   : grpc::Status::OK;
      }
    }
  }
  if (ok) {
    absl::Status st = BeginTurn();
    if (!st.ok()) EndWith(st);
  }
  Pump();
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
  std::optional<SessionId> given;
  if (first && request_.has_session_id()) {
    MODRWKV_ASSIGN_OR_RETURN(given, ParseSessionId(request_.session_id(), "session_id"));
  }
  // Validate the turn before any session exists.
  MODRWKV_ASSIGN_OR_RETURN(turn_request_, ToEngineChatTurn(request_, given.value_or(SessionId{}),
                                                           ctx_->translation, call_->deadline()));
  if (!first) return SubmitTurn();
  if (given) {
    {
      std::lock_guard<std::mutex> l(mu_);
      session_ = *given;
      pb::ChatResponse started;
      started.mutable_started()->set_session_id(given->ToString());
      started.mutable_started()->set_kept(true);
      queue_.push_back(std::move(started));
    }
    return SubmitTurn();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    creating_session_ = true;
    delete_session_at_end_ = !request_.keep_session();
  }
  ctx_->scheduler->CreateSession(
      owner_, [this](absl::StatusOr<SessionInfo> info) { OnSessionCreated(std::move(info)); });
  return absl::OkStatus();
}

void ChatReactor::OnSessionCreated(absl::StatusOr<SessionInfo> info) {
  absl::Status st;
  {
    std::lock_guard<std::mutex> l(mu_);
    creating_session_ = false;
    if (!info.ok()) {
      st = info.status();
    } else {
      session_ = info->id;
      pb::ChatResponse started;
      started.mutable_started()->set_session_id(info->id.ToString());
      started.mutable_started()->set_kept(!delete_session_at_end_);
      queue_.push_back(std::move(started));
      if (client_gone_) st = absl::CancelledError("cancelled");
    }
  }
  if (st.ok()) st = SubmitTurn();
  if (!st.ok()) EndWith(st);
  Pump();
}

absl::Status ChatReactor::SubmitTurn() {
  GenerateRequest r = std::move(turn_request_);
  int turn;
  {
    std::lock_guard<std::mutex> l(mu_);
    r.session = session_;
    turn = ++turns_;
    turn_active_ = true;
    overflowed_ = false;
    pending_bytes_ = 0;
  }
  r.owner = owner_;
  r.request_id = absl::StrCat(stream_id_, ".", turn);
  absl::StatusOr<RequestId> id = ctx_->scheduler->Submit(std::move(r), sink_);
  bool cancel = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!id.ok()) {
      turn_active_ = false;
      return id.status();
    }
    if (turns_ == turn) {
      turn_id_ = *id;
      cancel = client_gone_ || overflowed_;  // happened before we knew the id
    }
  }
  if (cancel) ctx_->scheduler->Cancel(*id);
  return absl::OkStatus();
}

void ChatReactor::CancelEngine() {
  RequestId id = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (turn_active_) id = turn_id_;
  }
  if (id != 0) ctx_->scheduler->Cancel(id);
}

void ChatReactor::OnEngineTokens(TokenEvent event) {
  bool overflow_now = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (overflowed_ || client_gone_) return;
    overflowed_ = overflow_now = AppendToBacklog(
        event, static_cast<size_t>(ctx_->options->stream_buffer_bytes), &pending_, &pending_bytes_);
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
    turn_active_ = false;
    if (!client_gone_ && (pending_.token_ids_size() > 0 || !pending_.text().empty())) {
      pb::ChatResponse chunk;
      chunk.mutable_chunk()->Swap(&pending_);
      queue_.push_back(std::move(chunk));
    }
    pending_.Clear();
    pending_bytes_ = 0;
    const bool grpc_deadline_passed = event.reason == FinishReason::kDeadline &&
                                      std::chrono::system_clock::now() >= call_->deadline();
    const absl::Status st = overflowed_ ? StreamOverflowError(ctx_->options->stream_buffer_bytes)
                                        : RpcStatusOf(event, grpc_deadline_passed);
    if (!client_gone_ && st.code() != absl::StatusCode::kCancelled &&
        st.code() != absl::StatusCode::kDeadlineExceeded) {
      pb::ChatResponse end;
      pb::TurnEnd* t = end.mutable_turn_end();
      t->set_finish_reason(overflowed_ ? pb::FINISH_REASON_ERROR : ToProto(event.reason));
      FillUsage(event, t->mutable_usage());
      t->set_request_id(absl::StrCat(stream_id_, ".", turns_));
      if (!st.ok()) t->set_error_message(std::string(st.message()));
      queue_.push_back(std::move(end));
    }
    record_.generation = true;
    record_.finish_reason = overflowed_ ? "error" : std::string(FinishReasonName(event.reason));
    record_.turns = turns_;
    record_.prompt_tokens += event.prompt_tokens;
    record_.generated_tokens += event.generated_tokens;
    record_.queue_time += event.queue_time;
    if (record_.time_to_first_token == absl::InfiniteDuration()) {
      record_.time_to_first_token = event.time_to_first_token;
    }
    record_.total_time += event.total_time;
    if (!st.ok()) {
      if (!end_status_) end_status_ = ToGrpcStatus(st);
    } else if (client_gone_) {
      if (!end_status_) end_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    } else {
      read_next = !end_status_.has_value();
    }
  }
  if (read_next) StartNextRead();
  Pump();
}

void ChatReactor::Pump() {
  enum { kNothing, kWrite, kFinish } action = kNothing;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (writing_ || finish_called_) return;
    if (!client_gone_ && !queue_.empty()) {
      out_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      action = kWrite;
    } else if (!client_gone_ && (pending_.token_ids_size() > 0 || !pending_.text().empty())) {
      out_.Clear();
      out_.mutable_chunk()->Swap(&pending_);
      pending_bytes_ = 0;
      writing_ = true;
      action = kWrite;
    } else if (end_status_ && !reading_ && !turn_active_ && !creating_session_) {
      finish_called_ = true;
      status = *end_status_;
      record_.code = status.error_code();
      record_.message = status.ok() ? "" : status.error_message();
      action = kFinish;
    }
  }
  if (action == kWrite) {
    StartWrite(&out_);
  } else if (action == kFinish) {
    ctx_->RecordRpc(record_);
    Finish(std::move(status));
  }
}

void ChatReactor::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> l(mu_);
    writing_ = false;
    if (!ok) {
      client_gone_ = true;
      queue_.clear();
      pending_.Clear();
      if (!end_status_) end_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
  }
  if (!ok) CancelEngine();
  Pump();
}

void ChatReactor::OnCancel() {
  {
    std::lock_guard<std::mutex> l(mu_);
    client_gone_ = true;
    queue_.clear();
    pending_.Clear();
    if (!end_status_) end_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
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
