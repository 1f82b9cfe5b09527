// The whole service's lifecycle: bind and serve health at once (readiness NOT_SERVING), load the
// model, warm up, turn ready, and on a signal drain and stop. `modrwkv serve` drives it.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/grammar/constraint_cache.h"
#include "grpcpp/server.h"
#include "server/auth.h"
#include "server/http/http_server.h"
#include "server/inference_service.h"
#include "server/logger.h"
#include "server/metrics.h"
#include "server/server_options.h"
#include "server/serving_context.h"
#include "server/sessions_service.h"

namespace modrwkv::server {

// The readiness service name of grpc.health.v1 ("" is liveness).
inline constexpr char kReadinessService[] = "modrwkv.v1.Inference";

class ModelServer {
 public:
  // Validates the options, starts the metrics endpoint and the gRPC server (liveness SERVING,
  // readiness NOT_SERVING, engine RPCs UNAVAILABLE until Load). Logs "listening" with the ports.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(const ServerOptions& options);
  ~ModelServer();  // stops whatever is still running

  int port() const { return port_; }
  int metrics_port() const { return metrics_->port(); }
  int http_port() const { return http_ ? http_->port() : -1; }

  // Loads tokenizer and model, starts the scheduler, runs the warm-up batch, then turns
  // readiness SERVING and logs "ready". Blocks (call it from main, not from a callback).
  absl::Status LoadAndServe();

  // Rereads --auth-token-file (SIGHUP): the new tokens apply to calls from now on, open streams
  // keep going; an invalid file keeps the old tokens and logs an error. Thread-safe.
  void ReloadAuth();

  // Graceful stop: readiness NOT_SERVING, no new admissions, waits up to drain_timeout for running
  // requests and Generate streams to finish, then cancels what is left and stops the server.
  // Blocks; idempotent.
  void DrainAndStop();

 private:
  explicit ModelServer(const ServerOptions& options);
  absl::Status WarmUp();
  // The --initial-state files and the state the checkpoint carries (`carried`, may be null).
  absl::Status LoadInitialStates(std::shared_ptr<const InitialState> carried);
  void SetReady(bool ready);
  // Drain: hands every idle session (prefix-cache entries aside) to the shared tier.
  void HandOffSessions();

  ServerOptions options_;
  std::unique_ptr<Logger> log_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Model> model_;
  std::shared_ptr<const encoders::VisionPipeline> vision_;      // null: text only
  std::shared_ptr<const encoders::AudioPipeline> audio_;        // null: no audio
  std::shared_ptr<const encoders::TimeSeriesPipeline> series_;  // null: no forecasting
  std::shared_ptr<const encoders::MediaRouter> media_router_;   // the pool's encoder
  std::unique_ptr<encoders::EncoderPool> media_pool_;
  std::unique_ptr<PrefixCache> prefix_cache_;              // --prefix-cache-entries > 0
  std::unique_ptr<InitialStates> initial_states_;          // --initial-state, the model's own
  std::unique_ptr<grammar::ConstraintCache> constraints_;  // --structured-output-schemas > 0
  std::unique_ptr<Scheduler> scheduler_;
  // --shared-sessions; stopped before the scheduler goes (its thread calls in), and the scheduler's
  // cold-tier spills reach it through spill_target_, which is cleared first.
  std::unique_ptr<SharedSessionTier> shared_sessions_;
  std::atomic<SharedSessionTier*> spill_target_{nullptr};
  ServingContext ctx_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<SessionsService> sessions_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<http::HttpServer> http_;  // --http-port; null when off
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace modrwkv::server
