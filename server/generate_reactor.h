// Inference.Generate: one request's n choices (GenerateRequest.n) streamed to one client.
//
// Threads: the constructor runs on a gRPC thread; OnChoiceEvent on the scheduler or encoder
// threads (through ReactorSink); OnWriteDone/OnCancel/OnDone on gRPC threads. All state is under
// mu_; the output side (one write in flight, Finish once) is a StreamOutbox driven under mu_.
//
// The engine side (media encoded once, the prompt prefilled once and forked per choice, the
// prefix-state cache) is EngineCalls, shared with the HTTP API.
//
// Backpressure: tokens that arrive while a write is in flight are coalesced into the next chunk
// of their choice. If more than ServerOptions::stream_buffer_bytes of output pile up (the client
// reads too slowly), the buffered output is dropped, the engine requests are cancelled (their
// slots are freed within one step) and the stream ends with FINISH_REASON_ERROR and
// RESOURCE_EXHAUSTED.
#pragma once

#include <memory>
#include <mutex>
#include <optional>

#include "grpcpp/support/server_callback.h"
#include "modrwkv/v1/inference.pb.h"
#include "server/engine_calls.h"
#include "server/reactor_sink.h"
#include "server/serving_context.h"
#include "server/stream_outbox.h"

namespace modrwkv::server {

class GenerateReactor final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  GenerateReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                  const pb::GenerateRequest* request);

  // Scheduler or encoder thread (via ReactorHandle::Run).
  void OnChoiceEvent(ChoiceEvent event);

 private:
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  absl::Status Start(const pb::GenerateRequest& request);
  void OnFinish(ChoiceEvent event);  // a choice's last event
  // Ends the stream with `st` before the engine ever saw the request.
  void FailBeforeEngine(const absl::Status& st);
  // Starts the next write, or the Finish once everything is written. Call without mu_ held.
  void Pump();
  void CancelEngine();

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  std::shared_ptr<ReactorHandle<GenerateReactor>> sink_;
  RpcRecord record_;  // written under mu_ (or before the first event)

  std::mutex mu_;
  std::unique_ptr<EngineCalls> calls_;  // null until started
  int n_ = 1;
  int finished_ = 0;          // choices whose FinishEvent arrived
  absl::Status end_;          // the first choice's error, the stream's status
  bool engine_done_ = false;  // no engine events will come; the outbox has the end status
  StreamOutbox<pb::GenerateResponse> outbox_;
};

}  // namespace modrwkv::server
