// The OpenAI-compatible HTTP face of the server (docs/api.md, "HTTP API"): the same process, the
// same scheduler, encoders, tokens, limits, metrics, drain and health as the gRPC face.
//
//   POST /v1/chat/completions, POST /v1/completions   (stream: Server-Sent Events)
//   GET  /v1/models
//   GET  /health (liveness), GET /health/ready (readiness)
//
// Threads: cpp-httplib serves each connection on a worker of its own pool (ServerOptions::
// http_threads); a request holds its worker until its answer is written (the handler waits on the
// engine's events, see EngineCalls), so the pool bounds the requests in progress at once.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "server/serving_context.h"

namespace httplib {
class Server;
}

namespace modrwkv::server::http {

class HttpServer {
 public:
  // Binds ServerOptions::host:http_port (0 = a free port) with TLS when the options have a
  // certificate (and client-certificate verification with a client CA), and starts serving.
  // Engine routes answer 503 until the context is loaded.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(ServingContext* ctx);
  ~HttpServer();  // Stop()

  int port() const { return port_; }

  // Stops accepting connections, cancels the engine requests still running (their streams end),
  // and waits for every handler to return. Idempotent.
  void Stop();

 private:
  explicit HttpServer(ServingContext* ctx);
  void Route();

  ServingContext* const ctx_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace modrwkv::server::http
