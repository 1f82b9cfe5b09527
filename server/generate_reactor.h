// Inference.Generate: one engine request streamed to one client.
//
// Threads: the constructor runs on a gRPC thread; OnEngine* on the scheduler thread (through
// ReactorSink); OnWriteDone/OnCancel/OnDone on gRPC threads. All state is under mu_; the output
// side (one write in flight, Finish once) is a StreamOutbox driven under mu_.
//
// Backpressure: tokens that arrive while a write is in flight are coalesced into the next chunk.
// If more than ServerOptions::stream_buffer_bytes of output pile up (the client reads too slowly),
// the buffered output is dropped, the engine request is cancelled (its slot is freed within one
// step) and the stream ends with FINISH_REASON_ERROR and RESOURCE_EXHAUSTED.
//
// Media: a request with image or audio parts first goes to the encoder pool; OnMediaEncoded (an
// encoder thread, through the sink) fills the rows in and submits it. Cancelling meanwhile drops
// the queued encoder work.
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

class GenerateReactor final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  GenerateReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                  const pb::GenerateRequest* request);

  // Scheduler thread (via ReactorSink).
  void OnEngineTokens(TokenEvent event);
  void OnEngineFinish(FinishEvent event);
  // Encoder thread (via ReactorSink::Run), once per request with media parts.
  void OnMediaEncoded(EncodedMedia rows);

 private:
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  absl::Status Submit(const pb::GenerateRequest& request);
  absl::Status SubmitToEngine(EngineRequest request);
  // Ends the stream with `st` before the engine ever saw the request.
  void FailBeforeEngine(const absl::Status& st);
  // Starts the next write, or the Finish once everything is written. Call without mu_ held.
  void Pump();
  void CancelEngine();

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  std::shared_ptr<ReactorSink<GenerateReactor>> sink_;
  RpcRecord record_;  // written under mu_ (or before the first event)

  std::mutex mu_;
  RequestId engine_id_ = 0;  // 0 until Submit returned
  // While media parts encode: the request waiting for them, and the encoder job (0 = none).
  EngineRequest pending_;
  std::vector<PendingMedia> media_;
  encoders::JobId media_job_ = 0;
  bool media_cancelled_ = false;
  absl::Time encode_started_;                          // when the media went to the encoder
  absl::Duration encode_wait_ = absl::ZeroDuration();  // until their rows were back
  bool engine_done_ = false;  // no engine events will come; the outbox has the end status
  StreamOutbox<pb::GenerateResponse> outbox_;
};

}  // namespace modrwkv::server
