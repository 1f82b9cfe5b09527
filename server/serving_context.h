// What the gRPC services share: the engine once it is loaded, options, auth, metrics, logs.
// Owned by ModelServer; outlives every RPC (the gRPC server is shut down and waited for first).
#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "engine/model.h"
#include "engine/scheduler.h"
#include "engine/tokenizer.h"
#include "grpcpp/server_context.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/logger.h"
#include "server/metrics.h"
#include "server/server_options.h"

namespace modrwkv::server {

// One finished RPC, for the request log line and the per-code counter.
struct RpcRecord {
  absl::string_view method;  // "Generate", "Chat", "Tokenize", ...
  std::string request_id;
  std::string owner;
  std::string peer;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // the status message when not OK
  // Generation RPCs (Chat: summed over the stream's turns).
  bool generation = false;
  std::string finish_reason;  // last finish reason
  int turns = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;
  absl::Duration queue_time, time_to_first_token = absl::InfiniteDuration(), total_time;
};

struct ServingContext {
  const ServerOptions* options = nullptr;
  const Authenticator* auth = nullptr;
  Metrics* metrics = nullptr;
  Logger* log = nullptr;

  // Set once by ModelServer after loading, before `loaded` turns true (release/acquire).
  Model* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  Scheduler* scheduler = nullptr;
  TranslationContext translation;
  std::atomic<bool> loaded{false};

  // Generate streams alive (drain waits for them).
  std::atomic<int> generate_streams{0};
  // Chat reactors alive. Their OnDone posts a session deletion to the scheduler, so the scheduler
  // is destroyed only once this is zero (decremented as the very last step of OnDone).
  std::atomic<int> chat_reactors{0};

  // OK once the engine is loaded; UNAVAILABLE with RetryInfo before.
  absl::Status CheckLoaded() const;
  // Authentication and the loaded check of every engine RPC: the caller identity, or the error.
  absl::StatusOr<std::string> Admit(const grpc::ServerContextBase& call) const;
  // The request id for logs: the x-request-id metadata, else `given`, else a random one.
  std::string RequestId(const grpc::ServerContextBase& call, const std::string& given) const;
  // The largest request this server accepts (INVALID_ARGUMENT naming `field` above it).
  absl::Status CheckSize(size_t bytes, absl::string_view field) const;
  // One log line per request and the per-method, per-code counter. Thread-safe.
  void RecordRpc(const RpcRecord& r) const;
};

}  // namespace modrwkv::server
