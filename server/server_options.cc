#include "server/server_options.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv::server {
namespace {

absl::Status FileReadable(const std::string& path, const char* option) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, ": '", path, "' is not a readable file"));
  }
  return absl::OkStatus();
}

}  // namespace

int ServerOptions::EffectiveDefaultMaxTokens() const {
  if (default_max_tokens > 0) return default_max_tokens;
  const int engine_default = StopConditions{}.max_tokens;
  return max_tokens_limit > 0 ? std::min(engine_default, max_tokens_limit) : engine_default;
}

absl::Status ServerOptions::Validate() const {
  if (model_path.empty()) return absl::InvalidArgumentError("model: a checkpoint path is required");
  std::error_code ec;
  if (!std::filesystem::is_directory(model_path, ec)) {
    if (auto st = FileReadable(model_path, "model"); !st.ok()) return st;
  }
  if (!vision_encoder.empty() && !std::filesystem::is_directory(vision_encoder, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision-encoder: '", vision_encoder, "' is not a folder (config.json, model.safetensors)"));
  }
  if (image_decode.limits.max_bytes < 1 || image_decode.limits.max_pixels < 1) {
    return absl::InvalidArgumentError("max-image-bytes and max-image-pixels must be >= 1");
  }
  if (max_images_per_request < 1 || max_images_per_request > 64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max-images-per-request must be in [1, 64], got %d", max_images_per_request));
  }
  if (auto st = encoder_pool.Validate(); !st.ok()) return st;
  for (const auto& [name, path] : initial_states) {
    if (auto st = FileReadable(path, "initial-state"); !st.ok()) return st;
  }
  if (!vocab_path.empty()) {
    if (auto st = FileReadable(vocab_path, "vocab"); !st.ok()) return st;
  }
  if (threads < 0 || threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrFormat("threads must be in [0, 1024], got %d", threads));
  }
  if (state_slots < 0 || state_slots > 1 << 16) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "state-slots must be in [0, 65536] (0 = max-running), got %d", state_slots));
  }
  if (state_slots > 0 && state_slots < scheduler.max_running) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "state-slots (%d) must be >= max-running (%d)", state_slots, scheduler.max_running));
  }
  if (auto st = scheduler.Validate(EffectiveSlots()); !st.ok()) return st;
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat("port must be in [0, 65535], got %d", port));
  }
  if (metrics_port < -1 || metrics_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("metrics-port must be in [0, 65535] or -1 (off), got %d", metrics_port));
  }
  if (metrics_port > 0 && metrics_port == port && EffectiveMetricsHost() == host) {
    return absl::InvalidArgumentError("metrics-port must differ from port");
  }
  if (http_port < -1 || http_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("http-port must be in [0, 65535] or -1 (off), got %d", http_port));
  }
  if (http_port > 0 &&
      (http_port == port || (http_port == metrics_port && EffectiveMetricsHost() == host))) {
    return absl::InvalidArgumentError("http-port must differ from port and metrics-port");
  }
  if (shared_session_write_through && shared_sessions.empty()) {
    return absl::InvalidArgumentError("shared-session-write-through needs --shared-sessions");
  }
  // A replica's copy must not outlive the entry that tells whether another replica has resumed
  // the session since (both clocks restart with each use of the session).
  if (shared_session_write_through && scheduler.session_ttl > shared_session_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared-session-ttl (", absl::FormatDuration(shared_session_ttl),
                     ") must be >= session-ttl (", absl::FormatDuration(scheduler.session_ttl),
                     ") with --shared-session-write-through"));
  }
  if (http_threads < 1 || http_threads > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("http-threads must be in [1, 4096], got %d", http_threads));
  }
  if (max_choices < 1 || max_choices > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max-choices must be in [1, 128], got %d", max_choices));
  }
  if (http_write_timeout < absl::Seconds(1)) {
    return absl::InvalidArgumentError("http-write-timeout must be >= 1s");
  }
  if (structured_output_schemas < 0 || structured_output_schemas > 4096) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "structured-output-schemas must be in [0, 4096], got %d", structured_output_schemas));
  }
  if (prefix_cache_entries < 0 || prefix_cache_min_tokens < 1 || prefix_cache_memory_bytes < 0) {
    return absl::InvalidArgumentError(
        "prefix-cache-entries and prefix-cache-memory must be >= 0 and prefix-cache-min-tokens >= "
        "1");
  }
  if (host.empty()) return absl::InvalidArgumentError("host must not be empty");
  if (max_message_bytes < 1024 || max_message_bytes > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max-message-bytes must be in [1024, 1073741824], got %d", max_message_bytes));
  }
  if (stream_buffer_bytes < 1024) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stream-buffer-bytes must be >= 1024, got %d", stream_buffer_bytes));
  }
  if (max_chat_streams_per_owner < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max-chat-streams-per-owner must be >= 0 (0 = unbounded), got %d",
                        max_chat_streams_per_owner));
  }
  if (max_requests_per_owner < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max-requests-per-owner must be >= 0 (0 = unbounded), got %d", max_requests_per_owner));
  }
  if (max_tokens_limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max-tokens-limit must be >= 0 (0 = none), got %d", max_tokens_limit));
  }
  if (default_max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "default-max-tokens must be >= 0 (0 = 256, capped at max-tokens-limit), got %d",
        default_max_tokens));
  }
  if (max_tokens_limit > 0 && default_max_tokens > max_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("default-max-tokens (%d) must be <= max-tokens-limit (%d)",
                        default_max_tokens, max_tokens_limit));
  }
  if (default_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default-timeout must be >= 0 (0 = none)");
  }
  const size_t at = chat_template.find("{text}");
  if (!chat_template.empty() &&
      (at == std::string::npos || chat_template.find("{text}", at + 1) != std::string::npos)) {
    return absl::InvalidArgumentError(
        "chat-template must contain \"{text}\" exactly once (where the user's message goes)");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls-cert and tls-key must be given together");
  }
  if (!tls_cert_file.empty()) {
    if (auto st = FileReadable(tls_cert_file, "tls-cert"); !st.ok()) return st;
    if (auto st = FileReadable(tls_key_file, "tls-key"); !st.ok()) return st;
  }
  if (!tls_client_ca_file.empty()) {
    if (tls_cert_file.empty()) {
      return absl::InvalidArgumentError("tls-client-ca (mTLS) needs tls-cert and tls-key");
    }
    if (auto st = FileReadable(tls_client_ca_file, "tls-client-ca"); !st.ok()) return st;
  }
  if (!shared_sessions_password_file.empty()) {
    if (shared_sessions.empty()) {
      return absl::InvalidArgumentError("shared-sessions-password-file needs --shared-sessions");
    }
    if (auto st = FileReadable(shared_sessions_password_file, "shared-sessions-password-file");
        !st.ok()) {
      return st;
    }
  }
  if (!auth_token_file.empty()) {
    if (auto st = FileReadable(auth_token_file, "auth-token-file"); !st.ok()) return st;
  }
  if (drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain-timeout must be >= 0");
  }
  return absl::OkStatus();
}

}  // namespace modrwkv::server
