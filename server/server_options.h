// Every option of the server in one typed struct, with defaults; Validate() at start-up names the
// offending option. tools/cli/cmd_serve.cc fills it from flags and environment variables.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "encoders/audio/audio_decode.h"
#include "encoders/image/image_decode.h"
#include "encoders/pool/encoder_pool.h"
#include "engine/model/model.h"
#include "engine/serving/scheduler.h"

namespace modrwkv::server {

inline constexpr char kDefaultChatTemplate[] =
    "\x16User: {text}\x17\x16"
    "Assistant:";

enum class LogFormat { kText, kJson };
enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// The range of a request's `priority` field (GenerateRequest.priority).
inline constexpr int kMinRequestPriority = -100;
inline constexpr int kMaxRequestPriority = 100;

struct ServerOptions {
  // Model: a checkpoint file, or a model directory with a manifest (docs/models.md).
  std::string model_path;
  std::string vision_encoder;  // encoder folder (Hugging Face layout); overrides the manifest
  std::string audio_encoder;   // Whisper / WavLM folder; overrides the manifest
  std::string vocab_path;  // "" = next to the model, then the bundled copy (resolved by the CLI)
  ModelOptions::WeightType dtype = ModelOptions::WeightType::kAuto;
  ModelOptions::StateType state_type = ModelOptions::StateType::kF32;
  bool cuda_graphs = true;         // ModelOptions::cuda_graphs
  bool sparse_ffn = true;          // ModelOptions::sparse_ffn
  bool encoder_tf32 = false;       // BundleOptions::encoder_tf32
  std::string device = "cpu";      // ModelOptions::device: cpu, cuda, cuda:N
  int threads = 0;                 // 0 = affinity mask capped by the cgroup quota (logged)
  int state_slots = 0;             // 0 = scheduler.max_running; more slots keep idle sessions hot
  int64_t state_memory_bytes = 0;  // > 0: as many slots as fit (ModelOptions::state_memory_bytes)
  bool verify_checksums = true;    // CheckpointOptions::verify_checksums

  // Network.
  std::string host = "0.0.0.0";
  int port = 50051;                 // 0 = pick a free port (printed in the "listening" log line)
  std::string metrics_host;         // "" = the same as `host`
  int metrics_port = 9090;          // 0 = pick a free port; -1 = no metrics endpoint
  int max_message_bytes = 4 << 20;  // largest request message accepted (INVALID_ARGUMENT above)
  bool reflection = true;           // grpc.reflection.v1alpha on the gRPC port
  // The OpenAI-compatible HTTP API (server/http): -1 = off, 0 = pick a free port. Same host, TLS,
  // tokens, limits and drain as gRPC.
  int http_port = -1;
  int http_threads = 64;  // requests in progress at once on the HTTP port (one thread each)
  int max_choices = 8;    // completions per request (`n`, gRPC and HTTP)
  // The highest `priority` a request may ask for (admission order), in [0, kMaxRequestPriority];
  // the lowest is kMinRequestPriority.
  int max_request_priority = 0;
  absl::Duration http_write_timeout = absl::Seconds(30);  // a client that stops reading is cut off
  std::string served_model_name;  // "model" in the HTTP API; "" = the model path's file name
  // Trained initial states (state tuning) requests may start from: (name, state file) pairs, and
  // the one fresh requests start from when they name none ("" = the state the model checkpoint
  // carries, if any, else none; "none"; or a name). server/initial_states.h.
  std::vector<std::pair<std::string, std::string>> initial_states;
  std::string default_initial_state;
  // Prefix-state cache: states after a shared prompt prefix (HTTP chat's messages before the last
  // user message, GenerateRequest.prefix_parts) at least prefix_cache_min_tokens long; at most
  // prefix_cache_entries (0 = off) and, when > 0, prefix_cache_memory_bytes of states.
  int prefix_cache_entries = 32;
  int64_t prefix_cache_memory_bytes = 0;
  int prefix_cache_min_tokens = 256;
  // Structured output: compiled JSON schemas kept, each with its cached token masks (<= 8 MiB);
  // 0 = structured output off.
  int structured_output_schemas = 16;

  // Batching, admission, sessions.
  SchedulerOptions scheduler;
  int64_t stream_buffer_bytes = 1 << 20;  // per-stream backlog before a slow reader is cut off
  int max_chat_streams_per_owner = 0;     // open Chat streams per caller identity; 0 = unbounded
  // Requests and tokens per caller identity in /metrics (modrwkv_caller_*): one series per
  // identity that called (the token file's lines, client certificate names).
  bool caller_metrics = true;
  // Requests in flight per caller identity (Generate and HTTP completions, Chat turns, Forecast
  // calls; from acceptance to the answer's end); 0 = unbounded.
  int max_requests_per_owner = 0;

  // Request caps and defaults (Generate and every Chat turn).
  int max_tokens_limit = 0;    // stop.max_tokens above it is INVALID_ARGUMENT; 0 = no limit
  int default_max_tokens = 0;  // when stop.max_tokens is unset; 0 = 256 capped at the limit
  // A server-side timeout for requests that set neither `timeout` nor a gRPC deadline (it ends
  // them like `timeout`: FINISH_REASON_DEADLINE, status OK); zero = none.
  absl::Duration default_timeout = absl::ZeroDuration();

  // Images (models with a vision encoder).
  encoders::DecodeOptions image_decode;       // bytes / pixel limits, EXIF orientation
  int max_images_per_request = 4;             // per Generate request or chat turn
  encoders::AudioDecodeOptions audio_decode;  // bytes / seconds / channels / rate limits
  int max_audio_per_request = 4;              // clips per Generate request or chat turn
  // Time series (models with a time-series encoder).
  int max_series_per_request = 4;  // time_series parts per Generate request
  int max_forecast_horizon = 0;    // Forecast steps (rolled out); 0 = 8 x the model's horizon
  encoders::EncoderPoolOptions encoder_pool;

  // Chat: "{text}" is replaced by the user's message, "{image}" (optional) by the turn's images.
  // Empty: the model manifest's template, else kDefaultChatTemplate.
  std::string chat_template;

  // Security.
  std::string tls_cert_file, tls_key_file;  // both or neither
  // Requires and verifies client certificates (mTLS). Without auth_token_file the certificate
  // names the caller (SAN URI, else SAN DNS, else CN); with it, the bearer token does.
  std::string tls_client_ca_file;
  std::string auth_token_file;  // bearer tokens, one per line ("[name ]token"); reread on SIGHUP

  // Lifecycle and logs.
  absl::Duration drain_timeout = absl::Seconds(30);
  // The shared session tier (server/shared_sessions.h): "redis://host:port", "" = off. Idle
  // sessions are handed to it when the server drains and resumed from it by any replica.
  std::string shared_sessions;
  absl::Duration shared_session_ttl = absl::Hours(1);
  // Every change of a kept session is stored in the shared tier before its answer, so a replica
  // that crashes loses no session (SharedSessionTier::Options::write_through).
  bool shared_session_write_through = false;
  // Redis AUTH for the shared tier: a file holding "PASSWORD" or "USERNAME PASSWORD" (an ACL
  // user), read at start-up. "" = no AUTH.
  std::string shared_sessions_password_file;
  bool warmup = true;
  LogLevel log_level = LogLevel::kInfo;
  LogFormat log_format = LogFormat::kText;

  // Slots the model is built with.
  int EffectiveSlots() const { return state_slots > 0 ? state_slots : scheduler.max_running; }
  const std::string& EffectiveMetricsHost() const {
    return metrics_host.empty() ? host : metrics_host;
  }
  // stop.max_tokens of a request that leaves it unset.
  int EffectiveDefaultMaxTokens() const;

  absl::Status Validate() const;
};

}  // namespace modrwkv::server
