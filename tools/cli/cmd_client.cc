// client: a terminal client for `modrwkv serve`. Subcommands: generate (streams text as it
// arrives), chat (an interactive conversation over the Chat stream), forecast (a CSV series to
// Forecast, the forecast back as CSV), tokenize, detokenize, info,
// health, and the session commands (create/get/fork/delete/export/import-session).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "encoders/timeseries/series_csv.h"
#include "engine/base/session_id.h"
#include "engine/base/status_macros.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "modrwkv/v1/inference.grpc.pb.h"
#include "modrwkv/v1/sessions.grpc.pb.h"
#include "server/metrics.h"
#include "server/session_routing.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"

namespace modrwkv::cli {
namespace {

namespace pb = ::modrwkv::v1;

void AddConnectionFlags(Flags& f) {
  f.Add("target", "localhost:50051",
        "server address host:port; several, comma-separated, are replicas of one deployment: a "
        "call on a session goes to the replica holding it, any other call to a random live one")
      .Add("token", "", "bearer token (sent as 'authorization: Bearer <token>')")
      .Add("token-file", "", "read the bearer token from this file (first line)")
      .AddBool("tls", "connect with TLS (implied by --tls-ca)")
      .Add("tls-ca", "", "PEM CA bundle to verify the server (default: system roots)")
      .Add("tls-cert", "", "PEM client certificate (mTLS)")
      .Add("tls-key", "", "PEM client key (mTLS)")
      .Add("tls-server-name", "", "expected server name in its certificate")
      .Add("timeout", "", "gRPC deadline in seconds (default: none)");
}

void AddSamplingFlags(Flags& f) {
  f.Add("max-tokens", "", "stop after this many tokens (server default 256)")
      .Add("temperature", "", "0 = greedy")
      .Add("top-k", "", "keep the k most likely tokens (0 = off)")
      .Add("top-p", "", "nucleus mass (1 = off)")
      .Add("min-p", "", "drop tokens below min-p * p(most likely)")
      .Add("repetition-penalty", "", "HF-style penalty on seen tokens (1 = off)")
      .Add("presence-penalty", "", "RWKV-style presence penalty")
      .Add("frequency-penalty", "", "RWKV-style frequency penalty")
      .Add("penalty-decay", "", "decay of the occurrence weights")
      .Add("seed", "", "sampling seed")
      .AddBool("json", "structured output: the answer is a JSON object")
      .Add("json-schema", "", "structured output: a file holding a JSON Schema the answer follows")
      .Add("stop", "", "stop string (repeat the flag for several)")
      .Add("session", "", "continue this session id")
      .Add("initial-state", "",
           "without --session: start from this trained initial state (client info lists them; "
           "none = the zero state)")
      .Add("priority", "0",
           "admission priority while requests wait, -100 to the server's --max-request-priority");
}

absl::StatusOr<std::string> ReadFirstLine(const std::string& path) {
  MODRWKV_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return text.substr(0, text.find_first_of("\r\n"));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const Flags& f,
                                                           const std::string& target) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (f.Bool("tls") || !f.Str("tls-ca").empty() || !f.Str("tls-cert").empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!f.Str("tls-ca").empty()) {
      MODRWKV_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(f.Str("tls-ca")));
    }
    if (!f.Str("tls-cert").empty()) {
      MODRWKV_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(f.Str("tls-cert")));
      MODRWKV_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(f.Str("tls-key")));
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  if (!f.Str("tls-server-name").empty()) {
    args.SetSslTargetNameOverride(f.Str("tls-server-name"));
  }
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(target, creds, args);
}

absl::Status SetupContext(const Flags& f, grpc::ClientContext* ctx) {
  std::string token = f.Str("token");
  if (token.empty() && !f.Str("token-file").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(token, ReadFirstLine(f.Str("token-file")));
  }
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  if (!f.Str("timeout").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(double s, f.Float("timeout", 0, 1e9));
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(s * 1e6)));
  }
  return absl::OkStatus();
}

// The channel for a call: to --target, or with several targets (replicas of one deployment) to
// the replica that holds `session` (server/session_routing.h), or for a call on no session to a
// random replica that answers. Each replica is asked for its routing hint (GetModelInfo).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const Flags& f, const std::string& session) {
  const std::vector<std::string> targets =
      absl::StrSplit(f.Str("target"), ',', absl::SkipWhitespace());
  if (targets.empty()) return absl::InvalidArgumentError("--target: give host:port");
  if (targets.size() == 1) return OpenChannel(f, targets[0]);
  std::optional<SessionId> id;
  if (!session.empty()) {
    absl::StatusOr<SessionId> parsed = SessionId::Parse(session);
    if (!parsed.ok())
      return absl::InvalidArgumentError(absl::StrCat("--session: ", parsed.status().message()));
    id = *parsed;
  }
  std::vector<server::Replica> replicas;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<int> live;
  std::string failures;
  for (const std::string& target : targets) {
    MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, OpenChannel(f, target));
    server::Replica replica{target, std::nullopt};
    grpc::ClientContext ctx;
    MODRWKV_RETURN_IF_ERROR(SetupContext(f, &ctx));
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::ModelInfo info;
    const grpc::Status st = pb::Inference::NewStub(channel)->GetModelInfo(&ctx, {}, &info);
    absl::StatusOr<uint32_t> hint = server::ParseRoutingHint(info.session_routing_hint());
    if (st.ok() && hint.ok()) {
      replica.routing_hint = *hint;
      live.push_back(static_cast<int>(replicas.size()));
    } else {
      absl::StrAppend(&failures, " ", target, ": ",
                      st.ok() ? hint.status().message() : st.error_message(), ";");
    }
    replicas.push_back(std::move(replica));
    channels.push_back(std::move(channel));
  }
  if (live.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no --target replica answered GetModelInfo:", failures));
  }
  if (id) return channels[server::PickReplica(*id, replicas)];
  std::random_device rd;
  return channels[live[std::uniform_int_distribution<size_t>(0, live.size() - 1)(rd)]];
}

// Prints a failed RPC: code, message, and the google.rpc details the server attached.
int RpcFail(const grpc::Status& st) {
  std::fprintf(stderr, "error: %s: %s\n",
               std::string(server::GrpcCodeName(st.error_code())).c_str(),
               st.error_message().c_str());
  google::rpc::Status rpc;
  if (!st.error_details().empty() && rpc.ParseFromString(st.error_details())) {
    for (const auto& any : rpc.details()) {
      google::rpc::ErrorInfo info;
      google::rpc::RetryInfo retry;
      google::rpc::BadRequest bad;
      if (any.UnpackTo(&info)) {
        std::fprintf(stderr, "  reason: %s (%s)\n", info.reason().c_str(), info.domain().c_str());
      } else if (any.UnpackTo(&retry)) {
        std::fprintf(stderr, "  retry after: %.3f s\n",
                     retry.retry_delay().seconds() + retry.retry_delay().nanos() / 1e9);
      } else if (any.UnpackTo(&bad)) {
        for (const auto& v : bad.field_violations()) {
          std::fprintf(stderr, "  field %s: %s\n", v.field().c_str(), v.description().c_str());
        }
      }
    }
  }
  return 1;
}

absl::Status FillSampling(const Flags& f, pb::SamplingParams* s, pb::StopConditions* stop) {
  auto fl = [&](const char* name, void (pb::SamplingParams::*set)(float)) -> absl::Status {
    if (f.Str(name).empty()) return absl::OkStatus();
    MODRWKV_ASSIGN_OR_RETURN(double v, f.Float(name, -1e9, 1e9));
    (s->*set)(static_cast<float>(v));
    return absl::OkStatus();
  };
  MODRWKV_RETURN_IF_ERROR(fl("temperature", &pb::SamplingParams::set_temperature));
  MODRWKV_RETURN_IF_ERROR(fl("top-p", &pb::SamplingParams::set_top_p));
  MODRWKV_RETURN_IF_ERROR(fl("min-p", &pb::SamplingParams::set_min_p));
  MODRWKV_RETURN_IF_ERROR(fl("repetition-penalty", &pb::SamplingParams::set_repetition_penalty));
  MODRWKV_RETURN_IF_ERROR(fl("presence-penalty", &pb::SamplingParams::set_presence_penalty));
  MODRWKV_RETURN_IF_ERROR(fl("frequency-penalty", &pb::SamplingParams::set_frequency_penalty));
  MODRWKV_RETURN_IF_ERROR(fl("penalty-decay", &pb::SamplingParams::set_penalty_decay));
  if (!f.Str("top-k").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(int64_t k, f.Int("top-k", 0, INT32_MAX));
    s->set_top_k(static_cast<int32_t>(k));
  }
  if (!f.Str("seed").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(int64_t seed, f.Int("seed", 0, INT64_MAX));
    s->set_seed(static_cast<uint64_t>(seed));
  }
  if (!f.Str("max-tokens").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(int64_t n, f.Int("max-tokens", 1, INT32_MAX));
    stop->set_max_tokens(static_cast<int32_t>(n));
  }
  for (const std::string& st : f.All("stop")) {
    if (!st.empty()) stop->add_stop_strings(st);
  }
  if (!f.Str("json-schema").empty()) {
    MODRWKV_ASSIGN_OR_RETURN(std::string schema, ReadFile(f.Str("json-schema")));
    s->mutable_response_format()->set_json_schema(std::move(schema));
  } else if (f.Bool("json")) {
    s->mutable_response_format()->set_json_object(true);
  }
  return absl::OkStatus();
}

void Print(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

std::string UsageLine(const pb::Usage& u) {
  const double ttft = u.has_time_to_first_token() ? u.time_to_first_token().seconds() +
                                                        u.time_to_first_token().nanos() / 1e9
                                                  : -1;
  std::string line =
      absl::StrFormat("prompt %d tokens, generated %d tokens, time to first token %.1f ms",
                      u.prompt_tokens(), u.generated_tokens(), ttft * 1e3);
  if (u.image_rows() > 0) {
    line += absl::StrFormat(" (%d of the prompt's rows from images)", u.image_rows());
  }
  if (u.audio_rows() > 0) {
    line += absl::StrFormat(" (%d of the prompt's rows from audio)", u.audio_rows());
  }
  if (u.cached_tokens() > 0) {
    line += absl::StrFormat(" (%d of the prompt's rows from the prefix cache)", u.cached_tokens());
  }
  return line;
}

// The bytes of each file named by the repeated flag `name` (--image, --audio).
absl::StatusOr<std::vector<std::string>> ReadFiles(const Flags& f, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& path : f.All(name)) {
    if (path.empty()) continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--", name, ": cannot read ", path));
    out.emplace_back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return out;
}

int Generate(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  pb::GenerateRequest req;
  auto images = ReadFiles(f, "image");
  if (!images.ok()) return UsageError(f, images.status());
  auto clips = ReadFiles(f, "audio");
  if (!clips.ok()) return UsageError(f, clips.status());
  for (std::string& bytes : *images) req.add_input()->mutable_image()->set_data(std::move(bytes));
  for (std::string& bytes : *clips) req.add_input()->mutable_audio()->set_data(std::move(bytes));
  if (!f.Str("prompt").empty()) req.add_input()->set_text(f.Str("prompt"));
  if (!f.Str("tokens").empty()) {
    auto ids = ParseIds(f.Str("tokens"), "tokens");
    if (!ids.ok()) return UsageError(f, ids.status());
    req.add_input()->mutable_tokens()->mutable_ids()->Assign(ids->begin(), ids->end());
  }
  if (auto st = FillSampling(f, req.mutable_sampling(), req.mutable_stop()); !st.ok()) {
    return UsageError(f, st);
  }
  if (!f.Str("session").empty()) req.set_session_id(f.Str("session"));
  req.set_initial_state(f.Str("initial-state"));
  auto priority = f.Int("priority", INT32_MIN, INT32_MAX);  // the server checks the range
  if (!priority.ok()) return UsageError(f, priority.status());
  req.set_priority(static_cast<int32_t>(*priority));
  if (f.Bool("ignore-eos")) req.mutable_stop()->set_ignore_end_of_text(true);
  for (const auto& [flag, set] : {std::pair<const char*, void (pb::GenerateRequest::*)(int32_t)>{
                                      "n", &pb::GenerateRequest::set_n},
                                  {"prefix-parts", &pb::GenerateRequest::set_prefix_parts}}) {
    if (f.Str(flag).empty()) continue;
    auto v = f.Int(flag, 0, INT32_MAX);
    if (!v.ok()) return UsageError(f, v.status());
    (req.*set)(static_cast<int32_t>(*v));
  }
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  auto stub = pb::Inference::NewStub(channel);
  auto reader = stub->Generate(&ctx, req);
  // One choice streams as it comes; several are printed one after another once all are done.
  const int n = req.has_n() ? std::max(req.n(), 1) : 1;
  std::vector<std::string> texts(n);
  std::vector<pb::GenerateResult> results(n);
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      if (n == 1) Print(resp.chunk().text());
      if (resp.chunk().choice() < n) texts[resp.chunk().choice()] += resp.chunk().text();
    }
    if (resp.has_result() && resp.result().choice() < n) {
      results[resp.result().choice()] = resp.result();
    }
  }
  if (n > 1) {
    for (int i = 0; i < n; ++i)
      Print(absl::StrCat(i ? "\n" : "", "--- choice ", i, "\n", texts[i]));
  }
  Print("\n");
  grpc::Status st = reader->Finish();
  if (!st.ok()) return RpcFail(st);
  if (f.Bool("usage")) {
    for (const pb::GenerateResult& result : results) {
      std::fprintf(stderr, "[%s; %s]\n", pb::FinishReason_Name(result.finish_reason()).c_str(),
                   UsageLine(result.usage()).c_str());
    }
  }
  return 0;
}

// Reads lines from stdin; each is one turn. The conversation's state stays on the server.
int Chat(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  pb::ChatRequest base;
  if (auto st = FillSampling(f, base.mutable_sampling(), base.mutable_stop()); !st.ok()) {
    return UsageError(f, st);
  }
  auto priority = f.Int("priority", INT32_MIN, INT32_MAX);  // the server checks the range
  if (!priority.ok()) return UsageError(f, priority.status());
  base.set_priority(static_cast<int32_t>(*priority));
  auto images = ReadFiles(f, "image");
  if (!images.ok()) return UsageError(f, images.status());
  auto clips = ReadFiles(f, "audio");
  if (!clips.ok()) return UsageError(f, clips.status());
  auto stub = pb::Inference::NewStub(channel);
  auto stream = stub->Chat(&ctx);
  const bool interactive = isatty(fileno(stdin));
  bool first = true;
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    pb::ChatRequest req = base;
    req.set_text(line);
    if (first) {
      if (!f.Str("session").empty()) req.set_session_id(f.Str("session"));
      req.set_initial_state(f.Str("initial-state"));
      req.set_keep_session(f.Bool("keep"));
      for (std::string& bytes : *images) req.add_images()->set_data(std::move(bytes));
      for (std::string& bytes : *clips) req.add_audio()->set_data(std::move(bytes));
    }
    if (!stream->Write(req)) break;
    pb::ChatResponse resp;
    bool turn_done = false;
    while (!turn_done && stream->Read(&resp)) {
      if (resp.has_started() && (f.Bool("keep") || f.Bool("usage"))) {
        std::fprintf(stderr, "[session %s%s]\n", resp.started().session_id().c_str(),
                     resp.started().kept() ? ", kept" : "");
      }
      if (resp.has_chunk()) Print(resp.chunk().text());
      if (resp.has_turn_end()) {
        turn_done = true;
        Print("\n");
        if (f.Bool("usage")) {
          std::fprintf(stderr, "[%s; %s]\n",
                       pb::FinishReason_Name(resp.turn_end().finish_reason()).c_str(),
                       UsageLine(resp.turn_end().usage()).c_str());
        }
      }
    }
    first = false;
    if (!turn_done) break;
  }
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  return st.ok() ? 0 : RpcFail(st);
}

int Tokenize(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  pb::TokenizeRequest req;
  req.set_text(f.Str("text"));
  pb::TokenizeResponse resp;
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  grpc::Status st = pb::Inference::NewStub(channel)->Tokenize(&ctx, req, &resp);
  if (!st.ok()) return RpcFail(st);
  std::string out;
  for (int i = 0; i < resp.token_ids_size(); ++i)
    absl::StrAppend(&out, i ? " " : "", resp.token_ids(i));
  std::printf("%s\n", out.c_str());
  return 0;
}

int Detokenize(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  auto ids = ParseIds(f.Str("tokens"), "tokens");
  if (!ids.ok()) return UsageError(f, ids.status());
  pb::DetokenizeRequest req;
  req.mutable_token_ids()->Assign(ids->begin(), ids->end());
  pb::DetokenizeResponse resp;
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  grpc::Status st = pb::Inference::NewStub(channel)->Detokenize(&ctx, req, &resp);
  if (!st.ok()) return RpcFail(st);
  Print(resp.raw());
  return 0;
}

// The CSV series to the server's Forecast, the forecast back as CSV in the same layout.
int Forecast(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  auto text = ReadFile(f.Str("csv"));
  if (!text.ok()) return Fail(text.status());
  auto csv = encoders::ParseSeriesCsv(*text, absl::StrCat("--csv ", f.Str("csv")));
  if (!csv.ok()) return Fail(csv.status());
  auto horizon = f.Int("horizon", 0, 1 << 20);
  if (!horizon.ok()) return UsageError(f, horizon.status());
  pb::ForecastRequest req;
  req.mutable_series()->mutable_values()->Assign(csv->series.values.begin(),
                                                 csv->series.values.end());
  req.mutable_series()->set_channels(csv->series.channels);
  req.set_horizon(static_cast<int32_t>(*horizon));
  pb::ForecastResponse resp;
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  grpc::Status st = pb::Inference::NewStub(channel)->Forecast(&ctx, req, &resp);
  if (!st.ok()) return RpcFail(st);
  // With --quantiles, every level the server answered, as more columns.
  std::vector<float> levels, quantiles;
  if (f.Bool("quantiles")) {
    for (const pb::QuantileForecast& q : resp.quantiles()) {
      levels.push_back(q.level());
      quantiles.insert(quantiles.end(), q.values().begin(), q.values().end());
    }
  }
  auto out = encoders::FormatForecastCsv(
      *csv, absl::MakeConstSpan(resp.values().data(), resp.values_size()), resp.horizon(), levels,
      quantiles);
  if (!out.ok()) return Fail(out.status());
  Print(*out);
  if (f.Bool("usage")) {
    const google::protobuf::Duration& t = resp.usage().total_time();
    std::fprintf(stderr, "%d steps in %d round(s); %d prompt rows (%d from the series); %.3f s\n",
                 resp.horizon(), resp.rounds(), resp.usage().prompt_tokens(),
                 resp.usage().series_rows(), t.seconds() + t.nanos() / 1e9);
  }
  return 0;
}

int Info(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  pb::ModelInfo resp;
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  grpc::Status st = pb::Inference::NewStub(channel)->GetModelInfo(&ctx, {}, &resp);
  if (!st.ok()) return RpcFail(st);
  std::printf("%s", resp.DebugString().c_str());
  return 0;
}

int Health(const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(f.Str("service"));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  grpc::Status st = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, req, &resp);
  if (!st.ok()) return RpcFail(st);
  std::printf("%s\n",
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

void PrintSession(const pb::Session& s) {
  std::printf("%s tokens=%lld hot=%d busy=%d\n", s.session_id().c_str(),
              static_cast<long long>(s.tokens()), s.hot(), s.busy());
}

int SessionCommand(const std::string& sub, const Flags& f, std::shared_ptr<grpc::Channel> channel) {
  auto stub = pb::Sessions::NewStub(channel);
  grpc::ClientContext ctx;
  if (auto st = SetupContext(f, &ctx); !st.ok()) return UsageError(f, st);
  pb::Session session;
  grpc::Status st;
  if (sub == "create-session") {
    pb::CreateSessionRequest req;
    req.set_initial_state(f.Str("initial-state"));
    st = stub->CreateSession(&ctx, req, &session);
  } else if (sub == "get-session") {
    pb::GetSessionRequest req;
    req.set_session_id(f.Str("session"));
    st = stub->GetSession(&ctx, req, &session);
  } else if (sub == "fork-session") {
    pb::ForkSessionRequest req;
    req.set_session_id(f.Str("session"));
    st = stub->ForkSession(&ctx, req, &session);
  } else if (sub == "delete-session") {
    pb::DeleteSessionRequest req;
    req.set_session_id(f.Str("session"));
    pb::DeleteSessionResponse resp;
    st = stub->DeleteSession(&ctx, req, &resp);
    if (!st.ok()) return RpcFail(st);
    std::printf("deleted %s\n", f.Str("session").c_str());
    return 0;
  } else if (sub == "export-session") {
    pb::ExportSessionRequest req;
    req.set_session_id(f.Str("session"));
    auto reader = stub->ExportSession(&ctx, req);
    std::ofstream out(f.Str("file"), std::ios::binary);
    if (!out) return Fail(absl::NotFoundError(absl::StrCat("cannot write ", f.Str("file"))));
    pb::SessionBlobChunk chunk;
    int64_t bytes = 0;
    while (reader->Read(&chunk)) {
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      bytes += static_cast<int64_t>(chunk.data().size());
    }
    st = reader->Finish();
    if (!st.ok()) return RpcFail(st);
    std::printf("exported %lld bytes to %s\n", static_cast<long long>(bytes),
                f.Str("file").c_str());
    return 0;
  } else if (sub == "import-session") {
    auto blob = ReadFile(f.Str("file"));
    if (!blob.ok()) return Fail(blob.status());
    auto writer = stub->ImportSession(&ctx, &session);
    for (size_t off = 0; off < blob->size(); off += 256 << 10) {
      pb::SessionBlobChunk chunk;
      chunk.set_data(blob->substr(off, 256 << 10));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    st = writer->Finish();
  }
  if (!st.ok()) return RpcFail(st);
  PrintSession(session);
  return 0;
}

constexpr const char* kSubcommands =
    "generate, chat, forecast, tokenize, detokenize, info, health, create-session, get-session, "
    "fork-session, delete-session, export-session, import-session";

}  // namespace

int RunClient(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") {
    std::fprintf(argc < 3 ? stderr : stdout,
                 "usage: modrwkv client <subcommand> [flags]   (--help after one for its flags)\n"
                 "subcommands: %s\n",
                 kSubcommands);
    return argc < 3 ? 2 : 0;
  }
  const std::string sub = argv[2];
  Flags flags("client " + sub, "[--target host:port] [flags]",
              "Calls a running `modrwkv serve`. Errors print the gRPC code and the server's "
              "error details; exit code 1.");
  AddConnectionFlags(flags);
  if (sub == "generate") {
    AddSamplingFlags(flags);
    flags.Add("prompt", "", "prompt text")
        .Add("tokens", "", "prompt token ids (after --prompt when both are given)")
        .Add("image", "", "image file sent before the prompt (repeat the flag for several)")
        .Add("audio", "", "audio file sent before the prompt, after any images (repeatable)")
        .AddBool("ignore-eos", "do not stop at token 0 (end of text)")
        .Add("n", "", "completions of the prompt (prefilled once; printed one after another)")
        .Add("prefix-parts", "",
             "the first input parts (text, tokens) are a shared prefix the server may cache")
        .AddBool("usage", "print finish reason and token counts to stderr");
  } else if (sub == "chat") {
    AddSamplingFlags(flags);
    flags.Add("image", "", "image file sent with the first turn (repeat the flag for several)")
        .Add("audio", "", "audio file sent with the first turn (repeat the flag for several)")
        .AddBool("keep", "keep the conversation's session after exit (prints its id)")
        .AddBool("usage", "print finish reason and token counts per turn to stderr");
  } else if (sub == "forecast") {
    flags
        .Add("csv", "",
             "the series: a header row, an optional timestamp column, one column per "
             "channel",
             true)
        .Add("horizon", "0", "steps to forecast (0 = the model's own horizon)")
        .AddBool("quantiles",
                 "also print the server's quantile forecasts, as columns <channel>_q<level>")
        .AddBool("usage", "print rounds, rows and time to stderr");
  } else if (sub == "tokenize") {
    flags.Add("text", "", "text to tokenize", true);
  } else if (sub == "detokenize") {
    flags.Add("tokens", "", "token ids, comma- or space-separated", true);
  } else if (sub == "health") {
    flags.Add("service", "modrwkv.v1.Inference", "service name (\"\" = liveness)");
  } else if (sub == "get-session" || sub == "fork-session" || sub == "delete-session") {
    flags.Add("session", "", "session id", true);
  } else if (sub == "export-session") {
    flags.Add("session", "", "session id", true).Add("file", "", "write the blob here", true);
  } else if (sub == "import-session") {
    flags.Add("file", "", "read the blob from here", true);
  } else if (sub == "create-session") {
    flags.Add("initial-state", "",
              "the session starts from this trained initial state (none = the zero state)");
  } else if (sub != "info") {
    std::fprintf(stderr, "error: unknown client subcommand '%s' (one of: %s)\n", sub.c_str(),
                 kSubcommands);
    return 2;
  }
  auto parsed = flags.Parse(argc, argv, 3);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  const bool on_session = sub == "generate" || sub == "chat" || sub == "get-session" ||
                          sub == "fork-session" || sub == "delete-session" ||
                          sub == "export-session";
  auto channel = Connect(flags, on_session ? flags.Str("session") : "");
  if (!channel.ok()) return Fail(channel.status());
  if (sub == "generate") {
    if (flags.Str("prompt").empty() && flags.Str("tokens").empty()) {
      return UsageError(flags, absl::InvalidArgumentError("give --prompt or --tokens"));
    }
    return Generate(flags, *channel);
  }
  if (sub == "chat") return Chat(flags, *channel);
  if (sub == "forecast") return Forecast(flags, *channel);
  if (sub == "tokenize") return Tokenize(flags, *channel);
  if (sub == "detokenize") return Detokenize(flags, *channel);
  if (sub == "info") return Info(flags, *channel);
  if (sub == "health") return Health(flags, *channel);
  return SessionCommand(sub, flags, *channel);
}

}  // namespace modrwkv::cli
