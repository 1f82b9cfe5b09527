// Inference.Chat: a conversation on one session for the life of a bidirectional stream.
//
// Each client message is one turn: the chat template is applied, the turn is submitted on the
// session and answered as TokenChunk messages ending in TurnEnd. The next message is read only
// after a turn ended, so turns never overlap (a client may send ahead; gRPC flow control holds
// the messages). The session is created on the first turn (ChatStarted carries its id) and
// deleted when the stream ends, unless the client asked to keep it or brought its own.
//
// Threads and invariants as in GenerateReactor: state under mu_, at most one write and one read
// in flight, Finish exactly once, and only when no write, read or engine work is outstanding.
// A turn that fails ends the stream with the error status (use keep_session to survive it).
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "grpcpp/support/server_callback.h"
#include "modrwkv/v1/inference.pb.h"
#include "server/reactor_sink.h"
#include "server/serving_context.h"

namespace modrwkv::server {

class ChatReactor final : public grpc::ServerBidiReactor<pb::ChatRequest, pb::ChatResponse> {
 public:
  ChatReactor(ServingContext* ctx, grpc::CallbackServerContext* call);

  // Scheduler thread (via ReactorSink).
  void OnEngineTokens(TokenEvent event);
  void OnEngineFinish(FinishEvent event);

 private:
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // A turn arrived in request_: starts the session if needed, then submits.
  absl::Status BeginTurn();
  void OnSessionCreated(absl::StatusOr<SessionInfo> info);  // scheduler thread
  absl::Status SubmitTurn();
  void EndWith(const absl::Status& status);  // the stream ends once queued output is written
  void StartNextRead();
  void Pump();
  void CancelEngine();

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  std::shared_ptr<ReactorSink<ChatReactor>> sink_;
  std::string owner_;
  std::string stream_id_;
  pb::ChatRequest request_;       // the read buffer; stable while its turn runs (no read in flight)
  GenerateRequest turn_request_;  // the validated turn, waiting for its session

  std::mutex mu_;
  RpcRecord record_;
  bool first_turn_ = true;
  std::optional<SessionId> session_;
  bool delete_session_at_end_ = false;
  bool creating_session_ = false;  // CreateSession in flight
  bool turn_active_ = false;       // submitted; the engine has not finished it
  RequestId turn_id_ = 0;
  int turns_ = 0;
  bool overflowed_ = false;
  std::deque<pb::ChatResponse> queue_;  // complete messages, in order
  pb::TokenChunk pending_;              // the open chunk of the running turn
  size_t pending_bytes_ = 0;
  std::optional<grpc::Status> end_status_;
  bool reading_ = false, writing_ = false, finish_called_ = false, client_gone_ = false;
  pb::ChatResponse out_;
};

}  // namespace modrwkv::server
