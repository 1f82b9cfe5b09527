// The Forecast RPC: a unary call that runs rounds of (the series window through the encoder pool
// -> its rows prefilled by the scheduler with a hidden-state output -> the model's forecasting
// head, de-normalised), appending each round's forecast to the window until the asked horizon is
// reached (encoders/timeseries/rollout.h). Nothing blocks a gRPC thread: each stage calls back.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "encoders/pool/encoder_pool.h"
#include "encoders/timeseries/rollout.h"
#include "encoders/timeseries/series.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/serving/scheduler.h"
#include "grpcpp/support/server_callback.h"
#include "server/media_requests.h"
#include "server/reactor_sink.h"
#include "server/serving_context.h"

namespace modrwkv::server {

class ForecastReactor final : public grpc::ServerUnaryReactor {
 public:
  // Starts the first round (or finishes the call with the request's error).
  ForecastReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                  const pb::ForecastRequest* request, pb::ForecastResponse* response);

  // ReactorSink targets (scheduler thread; nothing is generated, so no tokens arrive).
  void OnEngineTokens(TokenEvent) {}
  void OnEngineFinish(FinishEvent event);

  void OnCancel() override;
  void OnDone() override;

 private:
  absl::Status Start(const pb::ForecastRequest& request);
  // Queues the current window on the encoder pool.
  absl::Status StartRound();
  void OnEncoded(EncodedMedia rows);
  // The stages under mu_; a status when the call is to end with it (finished outside mu_).
  std::optional<grpc::Status> Encoded(EncodedMedia rows);
  std::optional<grpc::Status> RoundDone(FinishEvent event);
  // Runs a stage under mu_, then finishes the call if the stage says so.
  template <typename Stage>
  void RunStage(Stage stage);
  // Fills the response (when OK) and the log record, once; nullopt when already complete.
  std::optional<grpc::Status> Complete(const absl::Status& status);

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  pb::ForecastResponse* const response_;
  const std::shared_ptr<ReactorSink<ForecastReactor>> sink_;
  const encoders::TimeSeriesPipeline* series_model_ = nullptr;

  std::mutex mu_;
  RpcRecord record_;
  std::optional<encoders::ForecastRollout> rollout_;  // set by Start
  encoders::SeriesNorm norm_;                         // of the window the current round encodes
  int horizon_ = 0;
  absl::Time deadline_ = absl::InfiniteFuture();
  int priority_ = 0;
  PerOwnerLimit::Hold in_flight_;  // one of the caller's requests in flight, until Complete
  absl::Time started_;
  encoders::JobId media_job_ = 0;
  RequestId engine_id_ = 0;
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace modrwkv::server
