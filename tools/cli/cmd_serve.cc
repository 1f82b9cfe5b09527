// serve: the gRPC server (server/ModelServer) on a model. Every flag can also come from an
// environment variable MODRWKV_<FLAG> (upper case, '-' -> '_'); a flag on the command line wins.
#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "engine/base/status_macros.h"
#include "server/model_server.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace modrwkv::cli {
namespace {

using server::ServerOptions;

struct FlagSpec {
  const char* name;
  const char* def;
  const char* help;
  bool is_bool = false;  // a switch: off unless given; with def "on", on unless --no-<name>
};

// --model, --dtype, --threads and --[no-]verify-checksums come from AddModelFlags.
constexpr FlagSpec kServeFlags[] = {
    {"vocab", "", "vocabulary file; default: next to the model, then the bundled copy"},
    {"host", "0.0.0.0", "address to listen on for gRPC"},
    {"port", "50051", "gRPC port (0 = any free port; the 'listening' log line says which)"},
    {"metrics-host", "", "address for the Prometheus endpoint (default: the --host value)"},
    {"metrics-port", "9090", "Prometheus /metrics port (0 = any free port, -1 = off)"},
    {"http-port", "-1",
     "OpenAI-compatible HTTP API port (-1 = off, 0 = any free port); same host, TLS and tokens"},
    {"http-threads", "64", "HTTP requests served at once (one thread each)"},
    {"max-choices", "8", "largest `n` (completions per request, gRPC and HTTP) accepted"},
    {"http-write-timeout", "30s", "an HTTP client that stops reading this long is cut off"},
    {"served-model-name", "",
     "the model's name in the HTTP API (default: the model path's file name)"},
    {"initial-state", "",
     "a trained initial state requests may start from (state tuning: RWKV-PEFT's "
     "blocks.{i}.att.time_state file, .pth or .safetensors), as NAME=PATH; repeat the flag or "
     "separate with commas for several"},
    {"default-initial-state", "",
     "the state requests start from when they name none: a NAME from --initial-state, or none "
     "(default: the state the model checkpoint carries, if any, else none)"},
    {"prefix-cache-entries", "32",
     "prefix states kept (HTTP chat's messages before the last user message, gRPC "
     "GenerateRequest.prefix_parts; 0 = off)"},
    {"prefix-cache-memory", "0",
     "state memory the prefix cache may hold, e.g. 256M (fewer entries if it is smaller; 0 = "
     "bounded by --prefix-cache-entries only)"},
    {"prefix-cache-min-tokens", "256", "shortest prefix worth caching, in tokens"},
    {"structured-output-schemas", "16",
     "JSON schemas kept compiled with their token masks (<= 8 MiB each; 0 = structured output "
     "off)"},
    {"max-running", "32", "sequences decoded together in one batch"},
    {"state-slots", "0", "state slots to allocate (0 = max-running; more keep idle sessions hot)"},
    {"state-memory", "0",
     "memory for state slots, e.g. 512M or 4G: as many slots as fit (0 = use --state-slots)"},
    {"max-step-tokens", "512", "per-step budget: decode tokens + prefill rows"},
    {"max-queued-requests", "256", "requests waiting for a slot before RESOURCE_EXHAUSTED"},
    {"max-queued-prompt-tokens", "1048576",
     "prompt tokens waiting before RESOURCE_EXHAUSTED (also the longest prompt accepted)"},
    {"max-cold-sessions", "1024",
     "idle sessions kept in host memory (LRU, the acting caller's own evicted first)"},
    {"max-sessions-per-owner", "0",
     "sessions one caller identity may hold (0 = no limit); above it RESOURCE_EXHAUSTED"},
    {"session-ttl", "1h", "idle sessions older than this are deleted (e.g. 90s, 30m, 1h)"},
    {"stream-buffer-bytes", "1048576",
     "output a slow client may leave unread before its request is cancelled"},
    {"max-chat-streams-per-owner", "0",
     "open Chat streams per caller identity (RESOURCE_EXHAUSTED above; 0 = unbounded)"},
    {"caller-metrics", "on",
     "requests and tokens per caller identity in /metrics (modrwkv_caller_requests_total, "
     "modrwkv_caller_tokens_total): a series per identity, from the token file or client "
     "certificates",
     true},
    {"max-requests-per-owner", "0",
     "requests in flight per caller identity: Generate and HTTP completions, Chat turns, "
     "Forecast calls (RESOURCE_EXHAUSTED above; 0 = unbounded)"},
    {"max-tokens-limit", "0", "largest stop.max_tokens a request may ask for (0 = no limit)"},
    {"max-request-priority", "0",
     "highest priority a request may ask for, up to 100 (admission order and prefill rows; the "
     "lowest is -100)"},
    {"priority-aging", "0",
     "a waiting or prefilling request counts one priority level higher for every this long "
     "since it arrived, so lower priorities wait a bounded time (e.g. 10s; 0 = strict "
     "priorities)"},
    {"fair-callers", "on",
     "callers share the batch, the prefill rows and the media encoder fairly: the caller with "
     "the fewest sequences in the batch is admitted first, callers take turns in the encoder "
     "queue (--no-fair-callers: first come, first served)",
     true},
    {"default-max-tokens", "0",
     "stop.max_tokens of requests that leave it unset (0 = 256, capped at --max-tokens-limit)"},
    {"default-timeout", "0",
     "timeout of requests that set neither timeout nor a gRPC deadline (0 = none)"},
    {"chat-template", "",
     "Chat turn template; {text} is the message, {image} where a turn's images go; \\xNN \\n "
     "\\t \\\\ escapes (default: the model manifest's, else \\x16User: "
     "{text}\\x17\\x16Assistant:)"},
    {"max-message-bytes", "33554432", "largest request message accepted (images travel in it)"},
    {"max-image-bytes", "20971520", "largest encoded image accepted"},
    {"max-image-pixels", "40000000",
     "largest image accepted, width x height, checked from the header before decoding"},
    {"max-images-per-request", "4", "images in one Generate request or chat turn"},
    {"max-audio-bytes", "26214400", "largest encoded audio clip accepted"},
    {"max-audio-seconds", "30",
     "longest audio clip, from the container header and while decoding (capped at the encoder's "
     "window: 30 s for Whisper, 20.46 s for WavLM)"},
    {"max-audio-per-request", "4", "audio clips in one Generate request or chat turn"},
    {"max-series-per-request", "4", "time_series parts in one Generate request"},
    {"max-forecast-horizon", "0",
     "the most steps a Forecast may ask; beyond the model's horizon the forecast is rolled out "
     "(0 = 8 x the model's horizon)"},
    {"image-orientation", "exif",
     "exif: apply the EXIF orientation (what a phone photo shows); ignore: as the official "
     "ModRWKV pipeline does"},
    {"encoder-workers", "1", "encoder worker threads (each encodes one batch at a time)"},
    {"encoder-threads", "1", "threads each encoder worker uses for one batch"},
    {"encoder-queue-items", "32", "media items waiting for the encoder before RESOURCE_EXHAUSTED"},
    {"encoder-batch", "1",
     "media items encoded together at most (batching pays for small towers; SigLIP2-base is "
     "fastest one image at a time on CPU, docs/benchmarks.md)"},
    {"encoder-cache-bytes", "67108864",
     "memory for encoder outputs of recently seen media (0 = no cache)"},
    {"encoder-nice", "10",
     "nice value of the encoder threads (0..19): higher lets decode win a shared core, so text "
     "streams keep their pace while images encode"},
    {"tls-cert", "", "PEM server certificate chain (enables TLS)"},
    {"tls-key", "", "PEM private key of --tls-cert"},
    {"tls-client-ca", "", "PEM CA bundle: require and verify client certificates (mTLS)"},
    {"auth-token-file", "",
     "bearer tokens, one per line: 'token' or 'name token'; reread on SIGHUP"},
    {"drain-timeout", "30s", "on SIGTERM/SIGINT, how long running requests may take to finish"},
    {"shared-sessions", "",
     "redis://HOST:PORT: a shared session tier; a draining server hands its idle sessions there "
     "(and a full cold tier its LRU ones) and any replica resumes them (off by default)"},
    {"shared-session-ttl", "1h",
     "how long a session waits in the shared tier after its last store or resume"},
    {"shared-sessions-password-file", "",
     "a file holding the shared tier's Redis password ('PASSWORD' or 'USERNAME PASSWORD')"},
    {"shared-session-write-through", "",
     "store every change of a kept session in the shared tier before answering, so a replica "
     "that crashes loses none (every replica on the Redis must agree)",
     true},
    {"log-level", "info", "debug, info, warn or error"},
    {"log-format", "text", "text (key=value) or json"},
    {"no-warmup", "", "skip the warm-up batch before readiness", true},
    {"no-reflection", "", "do not serve gRPC server reflection", true},
};

std::string EnvName(const std::string& flag) {
  return absl::StrCat("MODRWKV_", absl::AsciiStrToUpper(absl::StrReplaceAll(flag, {{"-", "_"}})));
}

// \xNN, \n, \t, \r, \\ -> bytes.
absl::StatusOr<std::string> Unescape(const std::string& s, const char* flag) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out.push_back(s[i]);
      continue;
    }
    const char c = s[++i];
    if (c == 'n') {
      out.push_back('\n');
    } else if (c == 't') {
      out.push_back('\t');
    } else if (c == 'r') {
      out.push_back('\r');
    } else if (c == '\\') {
      out.push_back('\\');
    } else if (c == 'x' && i + 2 < s.size() &&
               std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": unknown escape '\\", std::string(1, c), "'"));
    }
  }
  return out;
}

// Bytes with an optional K, M or G: "512M", "4G", "65536".
absl::StatusOr<int64_t> ByteSizeFlag(const Flags& f, const char* name) {
  const std::string v = f.Str(name);
  int64_t mult = 1;
  std::string num = v;
  if (!v.empty() && std::string("KMGkmg").find(v.back()) != std::string::npos) {
    const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(v.back())));
    mult = u == 'K' ? (1LL << 10) : u == 'M' ? (1LL << 20) : (1LL << 30);
    num = v.substr(0, v.size() - 1);
  }
  int64_t n;
  if (!absl::SimpleAtoi(num, &n) || n < 0 || n > (1LL << 40) / mult) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be bytes with an optional K, M or G, got '", v, "'"));
  }
  return n * mult;
}

// "30s", "1h", "250ms" or a plain number of seconds.
absl::StatusOr<absl::Duration> DurationFlag(const Flags& f, const char* name) {
  const std::string v = f.Str(name);
  double seconds;
  absl::Duration d;
  if (absl::SimpleAtod(v, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(v, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a duration like 30s, 5m or 1h, got '", v, "'"));
  }
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must not be negative"));
  }
  return d;
}

absl::StatusOr<ServerOptions> OptionsFromFlags(const Flags& f) {
  ServerOptions o;
  MODRWKV_ASSIGN_OR_RETURN(ModelOptions mo, ModelOptionsFromFlags(f, 1));
  o.model_path = f.Str("model");
  o.dtype = mo.weight_type;
  o.device = mo.device;
  o.state_type = mo.state_type;
  o.cuda_graphs = mo.cuda_graphs;
  o.sparse_ffn = mo.sparse_ffn;
  o.encoder_tf32 = f.Bool("encoder-tf32");
  o.threads = mo.threads;
  o.verify_checksums = CheckpointOptionsFromFlags(f).verify_checksums;
  o.vision_encoder = f.Str("vision-encoder");
  o.audio_encoder = f.Str("audio-encoder");
  o.vocab_path = ResolveVocabPath(f.Str("vocab"), o.model_path);
  o.host = f.Str("host");
  o.metrics_host = f.Str("metrics-host");
  auto int_flag = [&](const char* name, int64_t lo, int64_t hi, auto* out) -> absl::Status {
    MODRWKV_ASSIGN_OR_RETURN(int64_t v, f.Int(name, lo, hi));
    *out = static_cast<std::remove_pointer_t<decltype(out)>>(v);
    return absl::OkStatus();
  };
  MODRWKV_RETURN_IF_ERROR(int_flag("port", 0, 65535, &o.port));
  MODRWKV_RETURN_IF_ERROR(int_flag("metrics-port", -1, 65535, &o.metrics_port));
  MODRWKV_RETURN_IF_ERROR(int_flag("http-port", -1, 65535, &o.http_port));
  MODRWKV_RETURN_IF_ERROR(int_flag("http-threads", 1, 4096, &o.http_threads));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-choices", 1, 128, &o.max_choices));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-request-priority", 0, server::kMaxRequestPriority, &o.max_request_priority));
  MODRWKV_ASSIGN_OR_RETURN(o.http_write_timeout, DurationFlag(f, "http-write-timeout"));
  o.served_model_name = f.Str("served-model-name");
  if (o.served_model_name.empty()) {
    o.served_model_name = std::filesystem::path(o.model_path).filename().string();
    if (o.served_model_name.empty()) {  // "models/demo/"
      o.served_model_name = std::filesystem::path(o.model_path).parent_path().filename().string();
    }
  }
  for (const std::string& value : f.All("initial-state")) {
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      const size_t eq = item.find('=');
      if (eq == absl::string_view::npos || eq == 0 || eq + 1 == item.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--initial-state: '", item, "' is not NAME=PATH"));
      }
      o.initial_states.emplace_back(std::string(item.substr(0, eq)),
                                    std::string(item.substr(eq + 1)));
    }
  }
  o.default_initial_state = f.Str("default-initial-state");
  MODRWKV_RETURN_IF_ERROR(int_flag("prefix-cache-entries", 0, 1 << 20, &o.prefix_cache_entries));
  MODRWKV_ASSIGN_OR_RETURN(o.prefix_cache_memory_bytes, ByteSizeFlag(f, "prefix-cache-memory"));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("structured-output-schemas", 0, 4096, &o.structured_output_schemas));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("prefix-cache-min-tokens", 1, 1 << 30, &o.prefix_cache_min_tokens));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-running", 1, 4096, &o.scheduler.max_running));
  MODRWKV_RETURN_IF_ERROR(int_flag("state-slots", 0, 65536, &o.state_slots));
  MODRWKV_ASSIGN_OR_RETURN(o.state_memory_bytes, ByteSizeFlag(f, "state-memory"));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-step-tokens", 1, 1 << 20, &o.scheduler.max_step_tokens));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-queued-requests", 1, 1 << 20, &o.scheduler.max_queued_requests));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-queued-prompt-tokens", 1, int64_t{1} << 32,
                                   &o.scheduler.max_queued_prompt_tokens));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-cold-sessions", 0, 1 << 24, &o.scheduler.max_cold_sessions));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-sessions-per-owner", 0, 1 << 24, &o.scheduler.max_sessions_per_owner));
  o.scheduler.fair_callers = f.Bool("fair-callers");
  MODRWKV_ASSIGN_OR_RETURN(o.scheduler.priority_aging, DurationFlag(f, "priority-aging"));
  o.caller_metrics = f.Bool("caller-metrics");
  MODRWKV_ASSIGN_OR_RETURN(o.scheduler.session_ttl, DurationFlag(f, "session-ttl"));
  if (o.scheduler.session_ttl == absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--session-ttl must be positive");
  }
  MODRWKV_RETURN_IF_ERROR(
      int_flag("stream-buffer-bytes", 1024, int64_t{1} << 32, &o.stream_buffer_bytes));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-chat-streams-per-owner", 0, 1 << 20, &o.max_chat_streams_per_owner));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-requests-per-owner", 0, 1 << 20, &o.max_requests_per_owner));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-tokens-limit", 0, 1 << 30, &o.max_tokens_limit));
  MODRWKV_RETURN_IF_ERROR(int_flag("default-max-tokens", 0, 1 << 30, &o.default_max_tokens));
  MODRWKV_ASSIGN_OR_RETURN(o.default_timeout, DurationFlag(f, "default-timeout"));
  MODRWKV_ASSIGN_OR_RETURN(o.chat_template, Unescape(f.Str("chat-template"), "chat-template"));
  if (o.chat_template.find("{image}") != std::string::npos &&
      o.chat_template.find("{text}") == std::string::npos) {
    return absl::InvalidArgumentError("--chat-template must contain {text}");
  }
  MODRWKV_RETURN_IF_ERROR(int_flag("max-message-bytes", 1024, 1 << 30, &o.max_message_bytes));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-image-bytes", 1, int64_t{1} << 32, &o.image_decode.limits.max_bytes));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-image-pixels", 1, int64_t{1} << 40, &o.image_decode.limits.max_pixels));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-images-per-request", 1, 64, &o.max_images_per_request));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("max-audio-bytes", 1, int64_t{1} << 32, &o.audio_decode.limits.max_bytes));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-audio-per-request", 1, 64, &o.max_audio_per_request));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-series-per-request", 1, 64, &o.max_series_per_request));
  MODRWKV_RETURN_IF_ERROR(int_flag("max-forecast-horizon", 0, 1 << 20, &o.max_forecast_horizon));
  {
    double seconds = 0;
    if (!absl::SimpleAtod(f.Str("max-audio-seconds"), &seconds) || !(seconds > 0) ||
        seconds > 3600) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--max-audio-seconds must be in (0, 3600], got '", f.Str("max-audio-seconds"), "'"));
    }
    o.audio_decode.limits.max_seconds = seconds;
  }
  const std::string orientation = f.Str("image-orientation");
  if (orientation != "exif" && orientation != "ignore") {
    return absl::InvalidArgumentError(
        absl::StrCat("--image-orientation must be exif or ignore, got '", orientation, "'"));
  }
  o.image_decode.apply_exif_orientation = orientation == "exif";
  MODRWKV_RETURN_IF_ERROR(int_flag("encoder-workers", 1, 256, &o.encoder_pool.workers));
  MODRWKV_RETURN_IF_ERROR(int_flag("encoder-threads", 1, 1024, &o.encoder_pool.threads_per_worker));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("encoder-queue-items", 1, 1 << 20, &o.encoder_pool.max_queued_items));
  MODRWKV_RETURN_IF_ERROR(int_flag("encoder-batch", 1, 256, &o.encoder_pool.max_batch));
  MODRWKV_RETURN_IF_ERROR(
      int_flag("encoder-cache-bytes", 0, int64_t{1} << 40, &o.encoder_pool.cache_bytes));
  MODRWKV_RETURN_IF_ERROR(int_flag("encoder-nice", 0, 19, &o.encoder_pool.nice));
  o.tls_cert_file = f.Str("tls-cert");
  o.tls_key_file = f.Str("tls-key");
  o.tls_client_ca_file = f.Str("tls-client-ca");
  o.auth_token_file = f.Str("auth-token-file");
  MODRWKV_ASSIGN_OR_RETURN(o.drain_timeout, DurationFlag(f, "drain-timeout"));
  o.shared_sessions = f.Str("shared-sessions");
  MODRWKV_ASSIGN_OR_RETURN(o.shared_session_ttl, DurationFlag(f, "shared-session-ttl"));
  o.shared_session_write_through = f.Bool("shared-session-write-through");
  o.shared_sessions_password_file = f.Str("shared-sessions-password-file");
  const std::string level = f.Str("log-level");
  if (level == "debug") {
    o.log_level = server::LogLevel::kDebug;
  } else if (level == "info") {
    o.log_level = server::LogLevel::kInfo;
  } else if (level == "warn") {
    o.log_level = server::LogLevel::kWarn;
  } else if (level == "error") {
    o.log_level = server::LogLevel::kError;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level must be debug, info, warn or error, got '", level, "'"));
  }
  const std::string format = f.Str("log-format");
  if (format == "text") {
    o.log_format = server::LogFormat::kText;
  } else if (format == "json") {
    o.log_format = server::LogFormat::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format must be text or json, got '", format, "'"));
  }
  o.warmup = !f.Bool("no-warmup");
  o.reflection = !f.Bool("no-reflection");
  MODRWKV_RETURN_IF_ERROR(o.Validate());
  return o;
}

// The signals serve handles, blocked in every thread (see RunServe) and taken by sigwait.
sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

// Waits for SIGTERM, SIGINT or (if `hup`) SIGHUP; returns the signal.
int WaitForSignal(bool hup) {
  const sigset_t set = HandledSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0 || (sig == SIGHUP && !hup)) {
  }
  return sig;
}

}  // namespace

int RunServe(int argc, char** argv) {
  Flags flags(
      "serve", "--model M [--vocab V] [--port P] [--metrics-port Q] [flags]",
      "Serves the model over gRPC (modrwkv.v1.Inference, modrwkv.v1.Sessions, "
      "grpc.health.v1, reflection) and Prometheus metrics. Every flag can also be set "
      "with an environment variable MODRWKV_<FLAG> (e.g. MODRWKV_PORT, "
      "MODRWKV_MAX_RUNNING); the command line wins. SIGTERM/SIGINT drain and exit 0; SIGHUP "
      "rereads --auth-token-file.");
  AddModelFlags(flags);
  for (const FlagSpec& s : kServeFlags) {
    if (s.is_bool && std::string_view(s.def) == "on") {
      flags.AddNegatableBool(s.name, true, s.help);
    } else if (s.is_bool) {
      flags.AddBool(s.name, s.help);
    } else {
      flags.Add(s.name, s.def, s.help);
    }
  }
  // Environment first, then the command line, so the command line wins.
  std::vector<std::string> args = {argv[0], argv[1]};
  std::vector<std::string> names = {
      "model",       "vision-encoder", "audio-encoder", "dtype",   "device",          "state-dtype",
      "cuda-graphs", "encoder-tf32",   "sparse-ffn",    "threads", "verify-checksums"};
  for (const FlagSpec& s : kServeFlags) names.push_back(s.name);
  for (const std::string& n : names) {
    if (const char* v = std::getenv(EnvName(n).c_str()))
      args.push_back(absl::StrCat("--", n, "=", v));
  }
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  auto parsed = flags.Parse(static_cast<int>(cargs.size()), cargs.data(), 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  absl::StatusOr<ServerOptions> options = OptionsFromFlags(flags);
  if (!options.ok()) return UsageError(flags, options.status());

  // Signals are taken by sigwait on this thread only: block them before any thread starts, so
  // every thread inherits the mask.
  const sigset_t set = HandledSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto srv = server::ModelServer::Start(*options);
  if (!srv.ok()) return Fail(srv.status());
  // A signal that arrives while loading stays pending and is acted on once loading is done.
  if (absl::Status st = (*srv)->LoadAndServe(); !st.ok()) {
    srv->reset();  // flushes the server's log first
    std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  // SIGHUP rereads the token file; SIGTERM/SIGINT drain (ModelServer logs "draining"), and a
  // second one exits at once.
  while (WaitForSignal(/*hup=*/true) == SIGHUP) (*srv)->ReloadAuth();
  std::thread([] {
    WaitForSignal(/*hup=*/false);
    std::fprintf(stderr, "second signal: exiting without draining\n");
    std::_Exit(1);
  }).detach();
  (*srv)->DrainAndStop();
  srv->reset();
  return 0;
}

}  // namespace modrwkv::cli
