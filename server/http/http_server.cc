#include "server/http/http_server.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "httplib.h"
#include "server/engine_calls.h"
#include "server/http/openai_api.h"
#include "server/initial_states.h"
#include "server/status_mapping.h"

namespace modrwkv::server::http {
namespace {

using json = nlohmann::json;

// How often a waiting handler looks whether the server is stopping.
constexpr absl::Duration kPoll = absl::Milliseconds(100);

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendError(const absl::Status& st, httplib::Response& res) {
  const ApiError e = ToApiError(st);
  res.status = e.http_status;
  if (e.retry_after_seconds) res.set_header("Retry-After", absl::StrCat(*e.retry_after_seconds));
  res.set_content(e.body, "application/json");
}

// The names of a verified client certificate (TLS with a client CA), as the gRPC face reads them.
PeerCertificateNames CertificateNames(const SSL* ssl) {
  PeerCertificateNames names;
  if (ssl == nullptr) return names;
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
    if (n->type != GEN_URI && n->type != GEN_DNS) continue;
    const ASN1_IA5STRING* s = n->type == GEN_URI ? n->d.uniformResourceIdentifier : n->d.dNSName;
    std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    (n->type == GEN_URI ? names.uri : names.dns).push_back(std::move(v));
  }
  GENERAL_NAMES_free(sans);
  char cn[256];
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) {
    names.common_name.emplace_back(cn);
  }
  X509_free(cert);
  return names;
}

// The caller's identity by the gRPC face's rules (bearer token, else client certificate).
absl::StatusOr<std::string> Identify(const Authenticator& auth, const httplib::Request& req) {
  if (auth.enabled()) return auth.IdentifyHeader(req.get_header_value("Authorization"));
  if (!auth.client_certificates()) return std::string();
  std::string id = CertificateIdentity(CertificateNames(req.ssl));
  if (id.empty()) {
    return WithReason(absl::UnauthenticatedError(
                          "the client certificate names no identity (no SAN URI or DNS, no CN)"),
                      "UNAUTHENTICATED");
  }
  return id;
}

std::string RequestIdOf(const httplib::Request& req) {
  std::string id = req.get_header_value("X-Request-Id");
  if (!id.empty() && id.size() <= 128) return id;
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
}

std::string PeerOf(const httplib::Request& req) {
  return absl::StrCat("http:", req.remote_addr, ":", req.remote_port);
}

// The engine's events for one request, queued for the handler thread that waits for them (an HTTP
// handler owns its thread for the request). Shared with EngineCalls' callback, which may outlive
// the handler.
class ChoiceQueue {
 public:
  explicit ChoiceQueue(int n) : n_(n) {}

  void Push(ChoiceEvent e) {
    {
      std::lock_guard<std::mutex> l(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  // The next event, waiting at most `timeout`; nullopt on timeout or once every choice finished.
  std::optional<ChoiceEvent> Next(absl::Duration timeout) {
    std::unique_lock<std::mutex> l(mu_);
    if (finishes_ == n_) return std::nullopt;
    if (!cv_.wait_for(l, absl::ToChronoMilliseconds(timeout), [&] { return !events_.empty(); })) {
      return std::nullopt;
    }
    ChoiceEvent e = std::move(events_.front());
    events_.pop_front();
    if (e.finish) ++finishes_;
    return e;
  }
  // Every choice's FinishEvent went out through Next.
  bool done() const {
    std::lock_guard<std::mutex> l(mu_);
    return finishes_ == n_;
  }

 private:
  const int n_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChoiceEvent> events_;
  int finishes_ = 0;
};

// Counts a request as open for the drain (ServingContext::generate_streams) while alive.
class OpenRequest {
 public:
  explicit OpenRequest(ServingContext* ctx) : ctx_(ctx) { ctx_->generate_streams.fetch_add(1); }
  ~OpenRequest() { ctx_->generate_streams.fetch_sub(1); }
  OpenRequest(const OpenRequest&) = delete;
  OpenRequest& operator=(const OpenRequest&) = delete;

 private:
  ServingContext* const ctx_;
};

// One completion request in progress: translation, the engine calls, the answer being built.
class Completion {
 public:
  Completion(ServingContext* ctx, const std::atomic<bool>* stopping, bool chat)
      : ctx_(ctx), stopping_(stopping), chat_(chat), open_(ctx) {
    record_.method = chat ? "openai.ChatCompletions" : "openai.Completions";
    created_ = absl::ToUnixSeconds(absl::Now());
  }
  ~Completion() { Record(); }

  // Admission, translation and submission; an error is the HTTP answer.
  absl::Status Start(const httplib::Request& req) {
    record_.request_id = RequestIdOf(req);
    record_.peer = PeerOf(req);
    id_ = absl::StrCat(chat_ ? "chatcmpl-" : "cmpl-", record_.request_id);
    MODRWKV_ASSIGN_OR_RETURN(record_.owner, Identify(*ctx_->auth, req));
    MODRWKV_RETURN_IF_ERROR(ctx_->CheckLoaded());
    ApiContext api;
    api.model_name = ctx_->options->served_model_name;
    api.user_template = ctx_->translation.chat_template;
    api.max_n = ctx_->options->max_choices;
    MODRWKV_ASSIGN_OR_RETURN(
        request_, chat_ ? ParseChatCompletion(req.body, api) : ParseCompletion(req.body, api));
    std::vector<PendingMedia> media;
    absl::StatusOr<EngineRequest> engine = ToEngineRequest(
        request_.generate, ctx_->translation, std::chrono::system_clock::time_point::max(), &media,
        [&](int i) { return request_.part_names[i]; });
    if (!engine.ok()) return RenameToApiField(engine.status(), request_);
    if (chat_) ApplyChatTurnRules(ctx_->translation, &*engine);
    absl::StatusOr<ChoicePlan> plan = ToChoicePlan(request_.generate, ctx_->translation);
    if (!plan.ok()) return RenameToApiField(plan.status(), request_);
    engine->owner = record_.owner;
    engine->request_id = record_.request_id;
    choices_.resize(plan->n);
    queue_ = std::make_shared<ChoiceQueue>(plan->n);
    MODRWKV_ASSIGN_OR_RETURN(
        calls_, EngineCalls::Start(ctx_, *std::move(engine), *plan, std::move(media),
                                   [q = queue_](ChoiceEvent e) { q->Push(std::move(e)); }));
    return absl::OkStatus();
  }

  // Waits for the next engine event and folds it into the answer; false once all choices ended.
  // Cancels the engine requests once the server stops.
  std::optional<ChoiceEvent> NextEvent() {
    while (!queue_->done()) {
      if (stopping_->load() && !cancelled_) {
        calls_->Cancel();
        cancelled_ = true;
      }
      std::optional<ChoiceEvent> e = queue_->Next(kPoll);
      if (!e) continue;
      Fold(*e);
      return e;
    }
    return std::nullopt;
  }

  void Cancel() {
    if (calls_) calls_->Cancel();
  }

  // The first error a choice ended with, or OK.
  absl::Status error() const { return error_; }
  const ApiRequest& request() const { return request_; }
  const std::string& request_id() const { return record_.request_id; }

  // The whole answer (non-streaming).
  json Body() const {
    json choices = json::array();
    for (int i = 0; i < request_.n; ++i) {
      const Choice& c = choices_[i];
      json choice = {{"index", i},
                     {"finish_reason", FinishReasonName(c.reason)},
                     {"logprobs", request_.logprobs ? c.logprobs : json(nullptr)}};
      if (chat_) {
        choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      } else {
        choice["text"] = c.text;
      }
      choices.push_back(std::move(choice));
    }
    return {{"id", id_},
            {"object", chat_ ? "chat.completion" : "text_completion"},
            {"created", created_},
            {"model", ctx_->options->served_model_name},
            {"choices", std::move(choices)},
            {"usage", Usage()}};
  }

  // One streamed chunk for event `e` (empty when it carries nothing to send).
  std::string Chunk(const ChoiceEvent& e) {
    Choice& c = choices_[e.choice];
    json delta = json::object();
    json choice = {{"index", e.choice}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    if (e.tokens) {
      if (e.tokens->text.empty() && !request_.logprobs) return "";
      if (request_.logprobs) {
        choice["logprobs"] =
            chat_ ? ChatLogprobs(e.tokens->tokens, e.tokens->logprobs, *ctx_->tokenizer)
                  : CompletionLogprobs(e.tokens->tokens, e.tokens->logprobs, *ctx_->tokenizer,
                                       &c.stream_offset);
      }
      if (chat_) {
        if (!c.role_sent) delta["role"] = "assistant";
        delta["content"] = e.tokens->text;
      } else {
        choice["text"] = e.tokens->text;
      }
      c.role_sent = true;
    } else {
      choice["finish_reason"] = FinishReasonName(e.finish->reason);
      if (!chat_) choice["text"] = "";
      if (chat_ && !c.role_sent) delta["role"] = "assistant";
    }
    if (chat_) choice["delta"] = std::move(delta);
    return Event(ChunkEnvelope(json::array({std::move(choice)})));
  }

  // The stream's closing events: usage (if asked) and [DONE].
  std::string Tail() const {
    std::string out;
    if (request_.include_usage) {
      json u = ChunkEnvelope(json::array());
      u["usage"] = Usage();
      out += Event(u);
    }
    out += "data: [DONE]\n\n";
    return out;
  }

  static std::string ErrorEvent(const absl::Status& st) {
    return absl::StrCat("data: ", ToApiError(st).body, "\n\n");
  }

  void SetOutcome(const absl::Status& st) { outcome_ = st; }

 private:
  struct Choice {
    std::string text;
    json logprobs;  // null until the first tokens with logprobs
    size_t offset = 0, stream_offset = 0;
    EndReason reason = EndReason::kError;
    bool role_sent = false;
  };

  static std::string Event(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

  json ChunkEnvelope(json choices) const {
    return {{"id", id_},
            {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", ctx_->options->served_model_name},
            {"choices", std::move(choices)}};
  }

  json Usage() const {
    json u = UsageJson(prompt_tokens_, generated_tokens_);
    u["prompt_tokens_details"] = {{"cached_tokens", cached_tokens_}};
    return u;
  }

  void Fold(const ChoiceEvent& e) {
    Choice& c = choices_[e.choice];
    if (e.tokens) {
      c.text += e.tokens->text;
      if (request_.logprobs) {
        AppendLogprobs(&c.logprobs,
                       chat_ ? ChatLogprobs(e.tokens->tokens, e.tokens->logprobs, *ctx_->tokenizer)
                             : CompletionLogprobs(e.tokens->tokens, e.tokens->logprobs,
                                                  *ctx_->tokenizer, &c.offset));
      }
      return;
    }
    const FinishEvent& f = *e.finish;
    c.reason = f.reason;
    if (f.reason == EndReason::kError && error_.ok()) {
      error_ = RenameToApiField(RpcStatusOf(f, false), request_);
    }
    // Every choice prefills the same prompt: it is counted once, as OpenAI does.
    if (e.choice == 0) {
      prompt_tokens_ = f.prompt_tokens;
      cached_tokens_ = e.cached_tokens;
      media_rows_ = e.media_rows;
      record_.queue_time = f.queue_time;
      record_.time_to_first_token = f.time_to_first_token;
      record_.total_time = f.total_time;
      record_.finish_reason = std::string(EndReasonName(f.reason));
    }
    generated_tokens_ += f.generated_tokens;
    record_.generation = true;
  }

  void Record() {
    record_.code = static_cast<grpc::StatusCode>(outcome_.code());
    record_.http_status = outcome_.ok() ? 200 : ToApiError(outcome_).http_status;
    record_.message = outcome_.ok() ? "" : std::string(outcome_.message());
    record_.prompt_tokens = prompt_tokens_;
    record_.generated_tokens = generated_tokens_;
    record_.image_rows = media_rows_.image;
    record_.audio_rows = media_rows_.audio;
    record_.series_rows = media_rows_.series;
    ctx_->RecordRpc(record_);
  }

  ServingContext* const ctx_;
  const std::atomic<bool>* const stopping_;
  const bool chat_;
  OpenRequest open_;
  RpcRecord record_;
  std::string id_;
  int64_t created_ = 0;
  ApiRequest request_;
  std::shared_ptr<ChoiceQueue> queue_;
  std::unique_ptr<EngineCalls> calls_;
  std::vector<Choice> choices_;
  int prompt_tokens_ = 0, generated_tokens_ = 0, cached_tokens_ = 0;
  MediaRows media_rows_;
  bool cancelled_ = false;
  absl::Status error_;
  absl::Status outcome_;  // what the request log records
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServingContext* ctx) {
  const ServerOptions& o = *ctx->options;
  std::unique_ptr<HttpServer> s(new HttpServer(ctx));
  if (!o.tls_cert_file.empty()) {
    s->server_ = std::make_unique<httplib::SSLServer>(
        o.tls_cert_file.c_str(), o.tls_key_file.c_str(),
        o.tls_client_ca_file.empty() ? nullptr : o.tls_client_ca_file.c_str());
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  if (!s->server_->is_valid()) {
    return absl::InvalidArgumentError(
        "http: cannot set up TLS with tls-cert-file / tls-key-file / tls-client-ca-file");
  }
  const int threads = o.http_threads;
  s->server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Media travel base64-encoded in JSON: 4/3 of the gRPC message limit, plus the JSON around.
  s->server_->set_payload_max_length(static_cast<size_t>(o.max_message_bytes) / 3 * 4 + 65536);
  s->server_->set_write_timeout(absl::ToInt64Seconds(o.http_write_timeout), 0);
  s->Route();
  s->port_ = o.http_port == 0 ? s->server_->bind_to_any_port(o.host)
                              : (s->server_->bind_to_port(o.host, o.http_port) ? o.http_port : -1);
  if (s->port_ <= 0) {
    return absl::UnavailableError(absl::StrFormat(
        "http: cannot listen on %s:%d (in use, or not a local address?)", o.host, o.http_port));
  }
  s->listener_ = std::thread([srv = s->server_.get()] { srv->listen_after_bind(); });
  return s;
}

HttpServer::HttpServer(ServingContext* ctx) : ctx_(ctx) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (server_) server_->stop();
  if (listener_.joinable()) listener_.join();
}

void HttpServer::Route() {
  ServingContext* ctx = ctx_;
  const std::atomic<bool>* stopping = &stopping_;
  server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own answer
    const absl::Status st =
        res.status == 413   ? InvalidField("body",
                                           "body: the request is larger than this server "
                                             "accepts (max-message-bytes, base64 included)")
        : res.status == 404 ? absl::NotFoundError(
                                  "no such route (POST /v1/chat/completions, "
                                  "POST /v1/completions, GET /v1/models)")
                            : absl::InvalidArgumentError(absl::StrCat("HTTP ", res.status));
    const int status = res.status;
    SendError(st, res);
    res.status = status;
  });

  server_->Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"serving\"}", "application/json");
  });
  server_->Get("/health/ready", [ctx, stopping](const httplib::Request&, httplib::Response& res) {
    const bool ready = ctx->ready.load() && !stopping->load();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? "{\"status\":\"serving\"}" : "{\"status\":\"not_serving\"}",
                    "application/json");
  });

  server_->Get("/v1/models", [ctx](const httplib::Request& req, httplib::Response& res) {
    RpcRecord r;
    r.method = "openai.Models";
    r.request_id = RequestIdOf(req);
    r.peer = PeerOf(req);
    absl::Status st = Identify(*ctx->auth, req).status();
    if (st.ok()) st = ctx->CheckLoaded();
    r.code = static_cast<grpc::StatusCode>(st.code());
    r.http_status = st.ok() ? 200 : ToApiError(st).http_status;
    r.message = std::string(st.message());
    ctx->RecordRpc(r);
    if (!st.ok()) return SendError(st, res);
    const InitialStates* states = ctx->translation.initial_states;
    res.set_content(Dump(ModelsJson(ctx->options->served_model_name, ctx->loaded_at_unix,
                                    states ? states->names() : std::vector<std::string>(),
                                    states ? states->default_name() : std::string())),
                    "application/json");
  });

  const auto completion = [ctx, stopping](bool chat) {
    return [ctx, stopping, chat](const httplib::Request& req, httplib::Response& res) {
      auto c = std::make_shared<Completion>(ctx, stopping, chat);
      absl::Status st = c->Start(req);
      if (!st.ok()) {
        c->SetOutcome(st);
        return SendError(st, res);
      }
      if (!c->request().stream) {
        while (c->NextEvent()) {
        }
        st = c->error();
        c->SetOutcome(st);
        if (!st.ok()) return SendError(st, res);
        res.set_content(Dump(c->Body()), "application/json");
        return;
      }
      // Streaming: the status line goes out with the first event, so a request that fails before
      // its first token (a bad image, a full queue found late) still gets its HTTP error.
      std::optional<ChoiceEvent> first = c->NextEvent();
      if (first && first->finish && !c->error().ok()) {
        c->SetOutcome(c->error());
        return SendError(c->error(), res);
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Request-Id", c->request_id());
      res.set_chunked_content_provider(
          "text/event-stream",
          [c, first = std::move(first), sent_first = false](size_t,
                                                            httplib::DataSink& sink) mutable {
            std::optional<ChoiceEvent> e;
            if (!sent_first) {
              sent_first = true;
              e = std::move(first);
            } else {
              e = c->NextEvent();
            }
            if (!e) {
              const absl::Status err = c->error();
              const std::string tail = err.ok() ? c->Tail() : Completion::ErrorEvent(err);
              c->SetOutcome(err);
              if (!sink.write(tail.data(), tail.size())) return false;
              sink.done();
              return true;
            }
            const std::string chunk = c->Chunk(*e);
            if (!chunk.empty() && !sink.write(chunk.data(), chunk.size())) {
              c->Cancel();  // the client is gone
              c->SetOutcome(absl::CancelledError("the client closed the stream"));
              return false;
            }
            return true;
          },
          [c](bool success) {
            if (!success) c->Cancel();
          });
    };
  };
  server_->Post("/v1/chat/completions", completion(true));
  server_->Post("/v1/completions", completion(false));
}

}  // namespace modrwkv::server::http
