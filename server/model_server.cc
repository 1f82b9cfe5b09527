#include "server/model_server.h"

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/cpu_budget.h"
#include "engine/loader/initial_state_loader.h"
#include "engine/loader/model_loader.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace modrwkv::server {
namespace {

// gRPC's own receive limit sits above ours, so a request slightly over max_message_bytes reaches
// the handler and gets INVALID_ARGUMENT naming the field; one far over it is refused by gRPC
// itself (RESOURCE_EXHAUSTED) before it is buffered.
int TransportReceiveLimit(int max_message_bytes) {
  const int64_t limit = 2LL * max_message_bytes + (1 << 20);
  return static_cast<int>(std::min<int64_t>(limit, INT32_MAX));
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  MODRWKV_ASSIGN_OR_RETURN(pair.private_key, ReadTextFile(o.tls_key_file));
  MODRWKV_ASSIGN_OR_RETURN(pair.cert_chain, ReadTextFile(o.tls_cert_file));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!o.tls_client_ca_file.empty()) {
    MODRWKV_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadTextFile(o.tls_client_ca_file));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

std::string HostPort(const std::string& host, int port) {
  // IPv6 literals need brackets.
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

// Loading libgrpc++_reflection registers its plugin with every ServerBuilder; this option takes
// it out again (--no-reflection).
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return p->name() == "proto_server_reflection";
    });
  }
};

// Counts the warm-up requests' finishes.
class WarmUpSink : public StreamSink {
 public:
  void OnTokens(TokenEvent) override {}
  void OnFinish(FinishEvent e) override {
    std::lock_guard<std::mutex> l(mu_);
    ++finished_;
    if (e.reason == EndReason::kError && error_.ok()) error_ = e.status;
    cv_.notify_all();
  }
  bool WaitFor(int n, absl::Duration timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, absl::ToChronoSeconds(timeout), [&] { return finished_ >= n; });
  }
  absl::Status error() {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }
  int finished() {
    std::lock_guard<std::mutex> l(mu_);
    return finished_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int finished_ = 0;
  absl::Status error_;
};

}  // namespace

ModelServer::ModelServer(const ServerOptions& options) : options_(options) {}

ModelServer::~ModelServer() { DrainAndStop(); }

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(const ServerOptions& options) {
  MODRWKV_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<ModelServer> s(new ModelServer(options));
  s->log_ = std::make_unique<Logger>(options.log_level, options.log_format);
  if (options.auth_token_file.empty()) {
    s->auth_ = Authenticator::Disabled(/*client_certificates=*/!options.tls_client_ca_file.empty());
  } else {
    MODRWKV_ASSIGN_OR_RETURN(s->auth_, Authenticator::FromFile(options.auth_token_file));
  }
  const std::string metrics_addr =
      options.metrics_port < 0 ? ""
                               : HostPort(options.EffectiveMetricsHost(), options.metrics_port);
  MODRWKV_ASSIGN_OR_RETURN(s->metrics_, Metrics::Create(metrics_addr));
  s->metrics_->SetReady(false);

  s->ctx_.options = &s->options_;
  s->ctx_.auth = s->auth_.get();
  s->ctx_.metrics = s->metrics_.get();
  s->ctx_.log = s->log_.get();
  s->ctx_.chat_streams = std::make_unique<PerOwnerLimit>(options.max_chat_streams_per_owner,
                                                         "max-chat-streams-per-owner",
                                                         "Chat streams open", "TOO_MANY_STREAMS");
  s->ctx_.requests =
      std::make_unique<PerOwnerLimit>(options.max_requests_per_owner, "max-requests-per-owner",
                                      "requests in flight", "TOO_MANY_REQUESTS");
  s->inference_ = std::make_unique<InferenceService>(&s->ctx_);
  s->sessions_ = std::make_unique<SessionsService>(&s->ctx_);

  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, Credentials(options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();  // process-wide, idempotent
  grpc::ServerBuilder builder;
  if (!options.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  builder.AddListeningPort(HostPort(options.host, options.port), creds, &s->port_);
  builder.SetMaxReceiveMessageSize(TransportReceiveLimit(options.max_message_bytes));
  builder.RegisterService(s->inference_.get());
  builder.RegisterService(s->sessions_.get());
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ",
                                               HostPort(options.host, options.port),
                                               " (in use, or not a local address?)"));
  }
  s->server_->GetHealthCheckService()->SetServingStatus("", true);
  s->SetReady(false);
  if (options.http_port >= 0) {
    MODRWKV_ASSIGN_OR_RETURN(s->http_, http::HttpServer::Start(&s->ctx_));
  }
  const char* identity = s->auth_->enabled()               ? "token"
                         : s->auth_->client_certificates() ? "certificate"
                                                           : "none";
  s->log_->Info("listening", {{"grpc_port", s->port_},
                              {"metrics_port", s->metrics_->port()},
                              {"http_port", s->http_port()},
                              {"metrics_host", options.EffectiveMetricsHost()},
                              {"tls", !options.tls_cert_file.empty()},
                              {"mtls", !options.tls_client_ca_file.empty()},
                              {"auth", s->auth_->enabled()},
                              {"identity", identity},
                              {"reflection", options.reflection}});
  return s;
}

void ModelServer::SetReady(bool ready) {
  server_->GetHealthCheckService()->SetServingStatus(kReadinessService, ready);
  server_->GetHealthCheckService()->SetServingStatus("modrwkv.v1.Sessions", ready);
  metrics_->SetReady(ready);
  ctx_.ready.store(ready);
}

absl::Status ModelServer::LoadAndServe() {
  const absl::Time t0 = absl::Now();
  log_->Info("loading", {{"model", options_.model_path}, {"vocab", options_.vocab_path}});
  if (options_.vocab_path.empty()) return absl::InvalidArgumentError("vocab: no vocabulary file");
  MODRWKV_ASSIGN_OR_RETURN(tokenizer_, Tokenizer::LoadFile(options_.vocab_path));
  ModelOptions mo;
  mo.weight_type = options_.dtype;
  mo.device = options_.device;
  mo.state_type = options_.state_type;
  mo.cuda_graphs = options_.cuda_graphs;
  mo.sparse_ffn = options_.sparse_ffn;
  mo.threads = options_.threads;
  if (mo.threads == 0) {
    const cpu::CpuBudget budget = cpu::DetectCpuBudget();
    mo.threads = budget.threads;
    log_->Info("threads", {{"threads", budget.threads}, {"why", budget.reason}});
  }
  mo.num_slots = options_.EffectiveSlots();
  mo.state_memory_bytes = options_.state_memory_bytes;
  CheckpointOptions co;
  co.verify_checksums = options_.verify_checksums;
  encoders::BundleOptions bo;
  bo.model = options_.model_path;
  bo.vision_encoder = options_.vision_encoder;
  bo.decode = options_.image_decode;
  bo.audio_encoder = options_.audio_encoder;
  bo.audio_decode = options_.audio_decode;
  bo.encoder_tf32 = options_.encoder_tf32;
  MODRWKV_ASSIGN_OR_RETURN(encoders::ModelBundle bundle,
                           encoders::OpenModelBundle(bo, mo, co, tokenizer_.get()));
  model_ = std::move(bundle.model);
  if (!bundle.encoder_missing.empty()) log_->Warn(bundle.encoder_missing, {});
  if (tokenizer_->vocab_size() > model_->config().vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the vocabulary has ids up to %d but the model only %d rows",
                        tokenizer_->vocab_size() - 1, model_->config().vocab_size));
  }
  MODRWKV_RETURN_IF_ERROR(LoadInitialStates(bundle.initial_state));
  metrics_->SetStepErrorLog([log = log_.get()](const absl::Status& st) {
    log->Error("model step failed", {{"status", st.ToString()}});
  });
  // Scheduler thread; the health service is thread-safe.
  metrics_->SetEngineFailedHandler([this](const absl::Status& st) {
    log_->Error("the model's device failed; readiness off until the process restarts",
                {{"status", st.ToString()}});
    SetReady(false);
  });
  SchedulerOptions sched_options = options_.scheduler;
  // Random per process, not per pod name: a restarted replica must not claim the ids of sessions
  // its previous life handed to the shared tier (another replica may have resumed them).
  ctx_.session_routing_hint = static_cast<uint32_t>(std::random_device{}());
  sched_options.session_routing_hint = ctx_.session_routing_hint;
  if (!options_.shared_sessions.empty()) {
    SharedSessionTier::Options so;
    so.address = options_.shared_sessions;
    so.ttl = options_.shared_session_ttl;
    so.write_through = options_.shared_session_write_through;
    if (!options_.shared_sessions_password_file.empty()) {
      MODRWKV_RETURN_IF_ERROR(
          SharedSessionTier::ReadPasswordFile(options_.shared_sessions_password_file, &so));
    }
    MODRWKV_ASSIGN_OR_RETURN(shared_sessions_,
                             SharedSessionTier::Start(so, metrics_.get(), log_.get()));
    ctx_.shared_sessions = shared_sessions_.get();
    spill_target_.store(shared_sessions_.get());
    // Sessions the cold tier has no room for move to the shared tier instead of being lost
    // (codec thread; dropped once the tier has stopped, at the very end of a drain).
    sched_options.spill_session = [this](SessionId id, std::string owner, std::string blob) {
      if (SharedSessionTier* t = spill_target_.load()) t->HandOff(id, owner, std::move(blob), {});
    };
  }
  // A caller's own session quota from the token file (auth_ outlives the scheduler).
  sched_options.sessions_quota_of = [auth = auth_.get()](const std::string& owner) {
    return auth->LimitsOf(owner).max_sessions;
  };
  MODRWKV_ASSIGN_OR_RETURN(
      scheduler_, Scheduler::Create(model_.get(), tokenizer_.get(), sched_options, metrics_.get()));
  metrics_->AttachScheduler(scheduler_.get());
  ctx_.model = model_.get();
  ctx_.tokenizer = tokenizer_.get();
  ctx_.scheduler = scheduler_.get();
  ctx_.translation.tokenizer = tokenizer_.get();
  ctx_.translation.model_vocab = model_->config().vocab_size;
  ctx_.translation.max_prompt_tokens = options_.scheduler.max_queued_prompt_tokens;
  ctx_.translation.chat_template = !options_.chat_template.empty() ? options_.chat_template
                                   : !bundle.manifest.chat_template.empty()
                                       ? bundle.manifest.chat_template
                                       : kDefaultChatTemplate;
  ctx_.translation.chat_stop_tokens = bundle.manifest.stop_tokens;
  ctx_.translation.chat_ban_tokens = bundle.manifest.ban_tokens;
  // Every modality the model serves goes through one encoder pool (one queue, one cache).
  std::map<std::string, std::shared_ptr<const encoders::ItemEncoder>> media_encoders;
  if (bundle.vision) {
    vision_ = bundle.vision;
    media_encoders[encoders::kImageKind] = vision_;
    ImageTranslation it;
    it.splice = bundle.image_splice;
    it.max_images = options_.max_images_per_request;
    it.max_bytes = options_.image_decode.limits.max_bytes;
    ctx_.translation.image = it;
    const encoders::VitConfig& vc = vision_->tower().config();
    log_->Info("vision", {{"encoder", vc.kind == encoders::VitKind::kClip ? "clip" : "siglip"},
                          {"image_size", vc.image_size},
                          {"rows_per_image", bundle.image_splice.rows},
                          {"layers", vision_->tower().layers_placed() ? "gpu" : "cpu"},
                          {"stem", vision_->tower().stem_placed() ? "gpu" : "cpu"},
                          {"adapter", vision_->adapter_placed() ? "gpu" : "cpu"},
                          {"splice", bundle.image_splice.mode == encoders::SpliceMode::kPrepend
                                         ? "prepend"
                                         : "replace_pad"},
                          {"generation", std::string(1, bundle.layout.generation)},
                          {"workers", options_.encoder_pool.workers}});
  }
  if (bundle.audio) {
    audio_ = bundle.audio;
    media_encoders[encoders::kAudioKind] = audio_;
    AudioTranslation at;
    at.max_clips = options_.max_audio_per_request;
    at.max_bytes = options_.audio_decode.limits.max_bytes;
    at.max_seconds = audio_->max_seconds();
    at.rows_per_second = audio_->rows_per_second();
    ctx_.translation.audio = at;
    log_->Info("audio", {{"encoder", audio_->encoder_kind()},
                         {"layers", audio_->layers_placed() ? "gpu" : "cpu"},
                         {"stem", audio_->stem_placed() ? "gpu" : "cpu"},
                         {"adapter", audio_->adapter_placed() ? "gpu" : "cpu"},
                         {"max_seconds", audio_->max_seconds()},
                         {"rows_per_second", audio_->rows_per_second()},
                         {"generation", std::string(1, bundle.layout.generation)}});
  }
  if (bundle.series) {
    series_ = bundle.series;
    media_encoders[encoders::kSeriesKind] = series_;
    SeriesTranslation st;
    st.channels = series_->channels();
    st.patch = series_->patch();
    st.rows_per_patch = series_->rows_per_patch();
    st.max_length = series_->max_length();
    st.horizon = series_->horizon();
    st.max_forecast_horizon =
        options_.max_forecast_horizon > 0 ? options_.max_forecast_horizon : 8 * st.horizon;
    st.max_series = options_.max_series_per_request;
    st.forecast_prompt = bundle.series_prompt;
    ctx_.translation.series = st;
    ctx_.series = series_.get();
    log_->Info("time_series", {{"encoder", series_->manifest().encoder},
                               {"channels", st.channels},
                               {"patch", st.patch},
                               {"max_length", st.max_length},
                               {"horizon", st.horizon},
                               {"max_forecast_horizon", st.max_forecast_horizon}});
  }
  if (!media_encoders.empty()) {
    MODRWKV_ASSIGN_OR_RETURN(media_router_,
                             encoders::MediaRouter::Create(std::move(media_encoders)));
    MODRWKV_ASSIGN_OR_RETURN(media_pool_,
                             encoders::EncoderPool::Create(media_router_, options_.encoder_pool,
                                                           metrics_->encoder_observer()));
    ctx_.media_pool = media_pool_.get();
  }
  if (options_.structured_output_schemas > 0) {
    constraints_ = std::make_unique<grammar::ConstraintCache>(
        std::make_shared<const grammar::TokenVocabulary>(tokenizer_->AllTokenBytes()),
        options_.structured_output_schemas);
    ctx_.translation.constraints = constraints_.get();
  }
  ctx_.translation.max_tokens_limit = options_.max_tokens_limit;
  ctx_.translation.default_max_tokens = options_.EffectiveDefaultMaxTokens();
  ctx_.translation.default_timeout = options_.default_timeout;
  ctx_.translation.max_choices = options_.max_choices;
  const ModelDescription& info = model_->info();
  log_->Info("loaded",
             {{"layers", info.config.n_layer},
              {"n_embd", info.config.n_embd},
              {"weight_dtype", info.weight_dtype},
              {"state_dtype", info.state_dtype},
              {"state_slots", model_->num_slots()},
              {"state_bytes", model_->StateBytes()},
              {"session_routing_hint", absl::StrFormat("%08x", ctx_.session_routing_hint)},
              {"shared_sessions", !shared_sessions_                   ? "off"
                                  : shared_sessions_->write_through() ? "write-through"
                                                                      : "move"},
              {"seconds", absl::ToDoubleSeconds(absl::Now() - t0)}});
  if (options_.warmup) {
    metrics_->SetRecording(false);
    const absl::Status st = WarmUp();
    metrics_->SetRecording(true);
    MODRWKV_RETURN_IF_ERROR(st);
  }
  // Each entry is one session's state: a memory budget bounds the entries too.
  int prefix_entries = options_.prefix_cache_entries;
  if (options_.prefix_cache_memory_bytes > 0) {
    prefix_entries = static_cast<int>(std::min<int64_t>(
        prefix_entries, options_.prefix_cache_memory_bytes / model_->StateBytes()));
    if (prefix_entries == 0) {
      log_->Warn("prefix cache off: --prefix-cache-memory holds no state",
                 {{"prefix_cache_memory", options_.prefix_cache_memory_bytes},
                  {"state_bytes", model_->StateBytes()}});
    }
  }
  if (prefix_entries > 0) {
    prefix_cache_ = std::make_unique<PrefixCache>(prefix_entries);
    ctx_.prefix_cache = prefix_cache_.get();
  }
  ctx_.loaded_at_unix = absl::ToUnixSeconds(absl::Now());
  ctx_.loaded.store(true, std::memory_order_release);
  SetReady(true);
  log_->Info("ready", {{"grpc_port", port_}, {"seconds", absl::ToDoubleSeconds(absl::Now() - t0)}});
  return absl::OkStatus();
}

absl::Status ModelServer::LoadInitialStates(std::shared_ptr<const InitialState> carried) {
  std::vector<std::shared_ptr<const InitialState>> states;
  if (carried) states.push_back(std::move(carried));
  for (const auto& [name, path] : options_.initial_states) {
    absl::StatusOr<InitialState> s = LoadInitialState(name, path, model_->config());
    if (!s.ok()) {
      return absl::Status(s.status().code(),
                          absl::StrCat("initial-state ", name, ": ", s.status().message()));
    }
    states.push_back(std::make_shared<const InitialState>(*std::move(s)));
  }
  MODRWKV_ASSIGN_OR_RETURN(
      InitialStates registry,
      InitialStates::Create(std::move(states), options_.default_initial_state));
  initial_states_ = std::make_unique<InitialStates>(std::move(registry));
  ctx_.translation.initial_states = initial_states_.get();
  const std::vector<std::string> names = initial_states_->names();
  metrics_->RegisterInitialStates(names);
  if (!names.empty()) {
    log_->Info("initial states", {{"states", absl::StrJoin(names, ",")},
                                  {"default", initial_states_->default_name().empty()
                                                  ? std::string(InitialStates::kNone)
                                                  : initial_states_->default_name()}});
  }
  return absl::OkStatus();
}

absl::Status ModelServer::WarmUp() {
  // One full batch (max_running sequences, each a short prefill and a few decode steps), so the
  // first real requests do not pay for first-touch page faults and allocator growth.
  const absl::Time t0 = absl::Now();
  const int n = options_.scheduler.max_running;
  // Short prompts, never longer than the queue admits.
  const int prompt_len =
      static_cast<int>(std::min<int64_t>(16, options_.scheduler.max_queued_prompt_tokens));
  auto sink = std::make_shared<WarmUpSink>();
  int submitted = 0;
  for (int i = 0; i < n; ++i) {
    EngineRequest r;
    InputRows part;
    for (int t = 0; t < prompt_len; ++t) part.tokens.push_back(1 + (i * 16 + t) % 255);
    r.prompt.push_back(std::move(part));
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = 4;
    r.request_id = absl::StrCat("warmup-", i);
    // Counted before Submit: a request in flight when it is refused may finish before we look.
    const int finished_before = sink->finished();
    absl::StatusOr<RequestId> id = scheduler_->Submit(std::move(r), sink);
    if (!id.ok()) {
      // Refused with nothing in flight, it never will be admitted.
      if (id.status().code() != absl::StatusCode::kResourceExhausted ||
          finished_before >= submitted) {
        return id.status();
      }
      // A queue bound below max_running: let the admitted ones finish, then go on.
      if (!sink->WaitFor(submitted, absl::Minutes(5))) {
        return absl::DeadlineExceededError("warm-up did not finish in 5 minutes");
      }
      --i;
      continue;
    }
    ++submitted;
  }
  if (!sink->WaitFor(submitted, absl::Minutes(5))) {
    return absl::DeadlineExceededError("warm-up did not finish in 5 minutes");
  }
  if (!sink->error().ok()) {
    return absl::InternalError(absl::StrCat("warm-up failed: ", sink->error().message()));
  }
  log_->Info("warmed up", {{"sequences", n}, {"seconds", absl::ToDoubleSeconds(absl::Now() - t0)}});
  return absl::OkStatus();
}

void ModelServer::ReloadAuth() {
  if (!auth_->enabled()) {
    log_->Info("SIGHUP: no auth token file to reload");
    return;
  }
  const absl::Status st = auth_->Reload();
  if (!st.ok()) {
    log_->Error("auth token file reload failed; keeping the previous tokens",
                {{"file", options_.auth_token_file}, {"error", st.message()}});
    return;
  }
  log_->Info("auth tokens reloaded", {{"file", options_.auth_token_file},
                                      {"tokens", static_cast<int64_t>(auth_->num_tokens())}});
}

void ModelServer::HandOffSessions() {
  std::promise<absl::StatusOr<std::vector<std::pair<SessionId, std::string>>>> listed;
  scheduler_->IdleSessions([&](auto list) { listed.set_value(std::move(list)); });
  absl::StatusOr<std::vector<std::pair<SessionId, std::string>>> sessions =
      listed.get_future().get();
  if (!sessions.ok()) return;
  std::vector<SessionId> cached;
  if (prefix_cache_) cached = prefix_cache_->Sessions();
  int handed = 0, failed = 0;
  for (const auto& [id, owner] : *sessions) {
    if (std::find(cached.begin(), cached.end(), id) != cached.end()) continue;
    std::promise<absl::Status> stored;
    scheduler_->ExportSession(
        id, owner, [&, id = id, owner = owner](absl::StatusOr<std::string> blob) {
          if (!blob.ok()) return stored.set_value(blob.status());
          shared_sessions_->HandOff(id, owner, *std::move(blob),
                                    [&](absl::Status st) { stored.set_value(std::move(st)); });
        });
    const absl::Status st = stored.get_future().get();
    if (st.ok()) {
      ++handed;
    } else {
      ++failed;
      if (absl::IsUnavailable(st)) break;  // Redis is down: the rest would fail the same way
    }
  }
  log_->Info(
      "sessions handed to the shared tier",
      {{"handed", handed}, {"failed", failed}, {"local", static_cast<int64_t>(sessions->size())}});
}

void ModelServer::DrainAndStop() {
  if (stopped_ || !server_) return;
  stopped_ = true;
  const absl::Time t0 = absl::Now();
  SetReady(false);
  metrics_->SetDraining(true);
  log_->Info("draining", {{"timeout_s", absl::ToDoubleSeconds(options_.drain_timeout)}});
  bool drained = true;
  if (scheduler_) {
    scheduler_->Drain();
    const absl::Time deadline = t0 + options_.drain_timeout;
    while (true) {
      const SchedulerStats st = scheduler_->stats();
      if (st.running == 0 && st.waiting == 0 && ctx_.generate_streams.load() == 0) break;
      if (absl::Now() >= deadline) {
        drained = false;
        log_->Warn("drain timeout: cancelling what is left",
                   {{"running", st.running}, {"waiting", st.waiting}});
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  // HTTP requests still running past the timeout are cancelled; their handlers return.
  if (http_) http_->Stop();
  // Cancels what is still open (idle Chat streams, anything past the timeout) and waits for
  // every callback to finish; the scheduler keeps running until then so cancellations complete.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  // Every reactor has reached OnDone, but may still be inside it on a gRPC thread (a Chat
  // reactor's OnDone talks to the scheduler), and a write-through store may outlive its call (a
  // Generate cancelled past the drain timeout). Wait for the last ones before the tier and the
  // scheduler go.
  for (int i = 0; i < 5000 && (ctx_.chat_reactors.load() > 0 || ctx_.generate_streams.load() > 0 ||
                               ctx_.persisting.load() > 0);
       ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (shared_sessions_) {
    HandOffSessions();
    ctx_.shared_sessions = nullptr;
    spill_target_.store(nullptr);
    shared_sessions_.reset();  // its queued operations done (they may call the scheduler)
  }
  media_pool_.reset();  // no reactor waits on it any more
  metrics_->AttachScheduler(nullptr);
  scheduler_.reset();
  log_->Info("stopped",
             {{"drained", drained}, {"seconds", absl::ToDoubleSeconds(absl::Now() - t0)}});
}

}  // namespace modrwkv::server
