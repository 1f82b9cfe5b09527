// Inference.Chat: a conversation on one session for the life of a bidirectional stream.
//
// Each client message is one turn: the chat template is applied, the turn is submitted on the
// session and answered as TokenChunk messages ending in TurnEnd. The next message is read only
// after a turn ended, so turns never overlap (a client may send ahead; gRPC flow control holds
// the messages). The session is created on the first turn and deleted when the stream ends,
// unless the client asked to keep it or brought its own. ChatStarted (the session id) is sent once
// the first turn was accepted by the scheduler, so a stream whose first turn is refused (an
// unknown session, a full queue) ends with the error and nothing before it.
//
// Threads: the constructor and On{Read,Write}Done/OnCancel/OnDone run on gRPC threads; OnEngine*
// and OnSessionCreated on the scheduler thread, through the ReactorSink (so the reactor is never
// deleted while they run). State is under mu_; the output side is a StreamOutbox. The stream
// finishes only when no read and no turn is outstanding: turn_busy_ is set when a message is read
// and cleared, in the same critical section that decides how the stream goes on, only when the
// engine finished the turn or the turn failed before it was submitted (session creation
// included). A turn that fails ends the stream with the error status.
#pragma once

#include <memory>
#include <mutex>
#include <optional>

#include "grpcpp/support/server_callback.h"
#include "modrwkv/v1/inference.pb.h"
#include "server/media_requests.h"
#include "server/reactor_sink.h"
#include "server/serving_context.h"
#include "server/stream_outbox.h"

namespace modrwkv::server {

class ChatReactor final : public grpc::ServerBidiReactor<pb::ChatRequest, pb::ChatResponse> {
 public:
  ChatReactor(ServingContext* ctx, grpc::CallbackServerContext* call);

  // Scheduler thread (via ReactorSink).
  void OnEngineTokens(TokenEvent event);
  void OnEngineFinish(FinishEvent event);
  void OnSessionCreated(absl::StatusOr<SessionInfo> info);
  // The first turn's session_id is here now (or its import failed), after the shared tier.
  void OnSessionLocal(absl::Status st);
  // Encoder thread (via ReactorSink::Run): the turn's media parts are encoded (or failed).
  void OnTurnMediaEncoded(EncodedMedia rows);

 private:
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // A turn arrived in request_ (turn_busy_ is set): starts the session if needed, then submits.
  absl::Status BeginTurn();
  // Encodes the turn's media parts first when it has any, then submits it.
  absl::Status SubmitTurn();
  absl::Status SubmitTurnToEngine();
  // The turn failed before the engine had it: the stream ends with `status`.
  void FailTurn(const absl::Status& status);
  void StartNextRead();
  void QueueStartedLocked();  // ChatStarted, if it waits for the first turn's acceptance
  void Pump();
  void CancelEngine();

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  std::shared_ptr<ReactorSink<ChatReactor>> sink_;
  std::string owner_;
  PerOwnerLimit::Hold stream_hold_;  // one of the owner's Chat streams
  std::string stream_id_;
  pb::ChatRequest request_;     // the read buffer; stable while its turn runs (no read in flight)
  EngineRequest turn_request_;  // the validated turn, waiting for its session and media
  std::vector<PendingMedia> turn_media_;               // its media parts, until encoded
  encoders::JobId media_job_ = 0;                      // the turn's encoder job while it runs
  absl::Time encode_started_;                          // when the turn's media went to the encoder
  absl::Duration encode_wait_ = absl::ZeroDuration();  // until their rows were back
  MediaRows turn_rows_;  // Usage.image_rows / audio_rows of the current turn

  std::mutex mu_;
  RpcRecord record_;
  bool first_turn_ = true;
  PerOwnerLimit::Hold turn_hold_;  // the running turn, one of the owner's requests in flight
  std::optional<SessionId> session_;
  bool own_session_ = false;  // created by this stream
  bool delete_session_at_end_ = false;
  std::optional<pb::ChatResponse> started_;  // ChatStarted, until the first turn is accepted
  bool reading_ = false;                     // a read is in flight
  bool turn_busy_ = false;  // a turn is being prepared, its session created, or it runs
  RequestId turn_id_ = 0;   // the running turn's id, once Submit returned
  int turns_ = 0;
  StreamOutbox<pb::ChatResponse> outbox_;
};

}  // namespace modrwkv::server
