// Helpers for end-to-end tests: run the real `modrwkv serve` binary on loopback ports (port 0,
// read back from its "listening" log line), talk to it with real gRPC clients, scrape /metrics.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "modrwkv/v1/inference.grpc.pb.h"
#include "modrwkv/v1/sessions.grpc.pb.h"

extern char** environ;

namespace modrwkv::e2e {

namespace fs = std::filesystem;
namespace pb = ::modrwkv::v1;
using Clock = std::chrono::steady_clock;

inline std::string ReadAll(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The rows of a tab-separated file with a header line (skipped); empty lines are skipped.
inline std::vector<std::vector<std::string>> ReadTsv(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(ReadAll(p));
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, '\t')) cols.push_back(c);
    rows.push_back(std::move(cols));
  }
  return rows;
}

// Runs `modrwkv <args>` to completion; returns the exit code, with stderr in *err.
inline int RunCli(const std::string& args, std::string* err = nullptr) {
  const fs::path err_file = fs::temp_directory_path() / ("e2e_cli_err_" + std::to_string(getpid()));
  const std::string cmd =
      std::string(MODRWKV_CLI) + " " + args + " >/dev/null 2>" + err_file.string();
  const int st = std::system(cmd.c_str());
  if (err) *err = ReadAll(err_file);
  fs::remove(err_file);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A demo model (random weights, tiny shape) written once per test binary and `seed`, and removed
// when the binary exits (34 MB each: left behind, every run would add a few of them to /tmp).
inline fs::path DemoModel(int seed = 3) {
  static std::map<int, fs::path>* models = [] {
    std::atexit([] {
      std::error_code ec;
      for (const auto& [s, model] : *models) fs::remove_all(model.parent_path(), ec);
    });
    return new std::map<int, fs::path>();
  }();
  auto it = models->find(seed);
  if (it != models->end()) return it->second;
  const fs::path dir = fs::temp_directory_path() /
                       ("modrwkv_e2e_" + std::to_string(getpid()) + "_" + std::to_string(seed));
  fs::create_directories(dir);
  std::string err;
  const int rc =
      RunCli("make-demo-model --out " + dir.string() + " --seed " + std::to_string(seed), &err);
  EXPECT_EQ(rc, 0) << err;
  (*models)[seed] = dir / "model.pth";
  return dir / "model.pth";
}

inline std::string VocabPath() {
  return std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt";
}

class ServerProcess {
 public:
  struct Options {
    std::vector<std::string> args;  // after "serve"; --model/--port/--metrics-port are added
    std::vector<std::string> env;   // extra "NAME=value" entries
    fs::path model;                 // default: DemoModel()
    bool wait_ready = true;
    bool metrics_host = true;  // pass --metrics-host 127.0.0.1 (else the server's default)
  };

  // Starts the server and waits for its "ready" log line (or just "listening").
  static std::unique_ptr<ServerProcess> Start(Options o) {
    auto s = std::unique_ptr<ServerProcess>(new ServerProcess());
    static int counter = 0;
    s->log_path_ = fs::temp_directory_path() / ("modrwkv_e2e_server_" + std::to_string(getpid()) +
                                                "_" + std::to_string(counter++) + ".log");
    if (o.model.empty()) o.model = DemoModel();
    std::vector<std::string> args = {
        MODRWKV_CLI, "serve",  "--model", o.model.string(), "--vocab", VocabPath(), "--host",
        "127.0.0.1", "--port", "0",       "--metrics-port", "0",       "--threads", "2"};
    if (o.metrics_host) {
      args.push_back("--metrics-host");
      args.push_back("127.0.0.1");
    }
    args.insert(args.end(), o.args.begin(), o.args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_storage;
    for (char** e = environ; *e; ++e) env_storage.emplace_back(*e);
    env_storage.insert(env_storage.end(), o.env.begin(), o.env.end());
    std::vector<char*> envp;
    for (std::string& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    // fork + exec rather than posix_spawn: the child asks to be killed when the test process
    // dies, so a crashed test never leaves a server behind.
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      return nullptr;
    }
    if (pid == 0) {  // child: async-signal-safe calls only
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int log_fd = open(s->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int null_fd = open("/dev/null", O_WRONLY);
      if (log_fd < 0 || null_fd < 0) _exit(127);
      dup2(log_fd, 2);
      dup2(null_fd, 1);
      execve(MODRWKV_CLI, argv.data(), envp.data());
      _exit(127);
    }
    s->pid_ = pid;
    const std::regex wanted(o.wait_ready ? "msg\"?[=:]\"?ready" : "msg\"?[=:]\"?listening");
    const std::regex ports("grpc_port\"?[=:](\\d+).*metrics_port\"?[=:](-?\\d+)");
    const std::regex http_port("http_port\"?[=:](-?\\d+)");
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      const std::string log = s->Log();
      std::smatch m;
      if (std::regex_search(log, m, ports)) {
        s->port_ = std::stoi(m[1]);
        s->metrics_port_ = std::stoi(m[2]);
      }
      if (std::regex_search(log, m, http_port)) s->http_port_ = std::stoi(m[1]);
      if (s->port_ > 0 && std::regex_search(log, wanted)) return s;
      if (s->Exited()) {
        ADD_FAILURE() << "server exited during start-up (code " << s->exit_code_ << "):\n" << log;
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "server not ready in 60 s:\n" << s->Log();
    return nullptr;
  }

  ~ServerProcess() {
    if (!Exited()) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
    }
    fs::remove(log_path_);
  }

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  int http_port() const { return http_port_; }  // -1 without --http-port
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadAll(log_path_); }

  std::shared_ptr<grpc::Channel> Channel() const {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    // Fresh connection per channel: tests that cancel must not share a transport by accident.
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    return grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(), args);
  }

  void Signal(int sig) { kill(pid_, sig); }

  // Waits for the process to exit; its exit code, or -1 on timeout / death by signal.
  int WaitExit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (Exited()) return exit_code_;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }

  bool Exited() {
    if (exited_) return true;
    int st;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    return exited_;
  }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0, metrics_port_ = -1, http_port_ = -1;
  fs::path log_path_;
  bool exited_ = false;
  int exit_code_ = -1;
};

// GET http://127.0.0.1:port/path; the body ("" on failure).
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, n);
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// The value of one series, e.g. Metric(text, "modrwkv_requests_finished_total{reason=\"length\"}").
// Label order must match the exposition (prometheus-cpp sorts labels by name). NaN if absent.
inline double Metric(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nan("");
}

inline double ScrapeMetric(const ServerProcess& s, const std::string& series) {
  return Metric(HttpGet(s.metrics_port(), "/metrics"), series);
}

// Polls until `pred` holds or `timeout` passes.
template <typename Pred>
bool Eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// The google.rpc.Status a server sent with an error.
inline google::rpc::Status Details(const grpc::Status& st) {
  google::rpc::Status rpc;
  rpc.ParseFromString(st.error_details());
  return rpc;
}

inline std::optional<google::rpc::ErrorInfo> ErrorInfoOf(const grpc::Status& st) {
  const google::rpc::Status rpc = Details(st);
  for (const auto& any : rpc.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info;
  }
  return std::nullopt;
}

inline std::optional<google::rpc::RetryInfo> RetryInfoOf(const grpc::Status& st) {
  const google::rpc::Status rpc = Details(st);
  for (const auto& any : rpc.details()) {
    google::rpc::RetryInfo info;
    if (any.UnpackTo(&info)) return info;
  }
  return std::nullopt;
}

// The BadRequest field violation's field, "" if none.
inline std::string BadFieldOf(const grpc::Status& st) {
  const google::rpc::Status rpc = Details(st);
  for (const auto& any : rpc.details()) {
    google::rpc::BadRequest bad;
    if (any.UnpackTo(&bad) && bad.field_violations_size() > 0) {
      return bad.field_violations(0).field();
    }
  }
  return "";
}

// One Generate stream read to the end.
struct StreamResult {
  grpc::Status status;
  std::string text;
  std::vector<int32_t> ids;
  std::vector<pb::TokenLogprob> logprobs;
  int chunks = 0;
  std::optional<pb::GenerateResult> result;
  int messages_after_result = 0;
};

// Folds one message of a Generate stream into `r`.
inline void FoldMessage(const pb::GenerateResponse& resp, StreamResult* r) {
  if (r->result) ++r->messages_after_result;
  if (resp.has_chunk()) {
    ++r->chunks;
    r->text += resp.chunk().text();
    r->ids.insert(r->ids.end(), resp.chunk().token_ids().begin(), resp.chunk().token_ids().end());
    for (const auto& lp : resp.chunk().logprobs()) r->logprobs.push_back(lp);
  }
  if (resp.has_result()) r->result = resp.result();
}

inline StreamResult Collect(grpc::ClientReaderInterface<pb::GenerateResponse>* reader) {
  StreamResult r;
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) FoldMessage(resp, &r);
  r.status = reader->Finish();
  return r;
}

inline StreamResult RunGenerate(pb::Inference::Stub* stub, const pb::GenerateRequest& req,
                                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  // Against a live server: a failed connection attempt is retried rather than failing the call.
  ctx.set_wait_for_ready(true);
  auto reader = stub->Generate(&ctx, req);
  return Collect(reader.get());
}

// A stream of GenerateRequest.n choices, split by choice (each with its own result).
struct ChoicesResult {
  grpc::Status status;
  std::vector<StreamResult> choices;
  bool ends_with_result = false;  // the stream's last message is a result
};

inline ChoicesResult RunGenerateChoices(pb::Inference::Stub* stub, const pb::GenerateRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  ctx.set_wait_for_ready(true);
  auto reader = stub->Generate(&ctx, req);
  ChoicesResult r;
  r.choices.resize(req.has_n() ? req.n() : 1);
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) {
    const int c = resp.has_chunk() ? resp.chunk().choice() : resp.result().choice();
    if (c < 0 || c >= static_cast<int>(r.choices.size())) {
      ADD_FAILURE() << "choice " << c << " out of range";
      continue;
    }
    FoldMessage(resp, &r.choices[c]);
    r.ends_with_result = resp.has_result();
  }
  r.status = reader->Finish();
  return r;
}

// A greedy request of `max_tokens` from `prompt` that does not stop at end-of-text.
inline pb::GenerateRequest Greedy(const std::string& prompt, int max_tokens) {
  pb::GenerateRequest req;
  req.add_input()->set_text(prompt);
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_stop()->set_max_tokens(max_tokens);
  req.mutable_stop()->set_ignore_end_of_text(true);
  return req;
}

inline grpc::health::v1::HealthCheckResponse::ServingStatus Health(
    const std::shared_ptr<grpc::Channel>& ch, const std::string& service,
    grpc::Status* status_out = nullptr) {
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Status st = grpc::health::v1::Health::NewStub(ch)->Check(&ctx, req, &resp);
  if (status_out) *status_out = st;
  return st.ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
}

// A client certificate to make: file stem, openssl -subj, subjectAltName ("" = none).
struct ClientCert {
  std::string name, subject, san;
};

// Writes a self-signed CA (ca.pem), a server certificate for localhost (server.pem, server.key)
// and the client certificates (<name>.pem, <name>.key), all signed by the CA (openssl CLI).
inline bool MakeCertificates(const fs::path& dir, const std::vector<ClientCert>& clients) {
  fs::create_directories(dir);
  std::string cmd =
      "cd " + dir.string() +
      " && "
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key "
      "-out ca.pem && "
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
      "-out server.csr && "
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.ext -out server.pem";
  for (const ClientCert& c : clients) {
    cmd += " && openssl req -newkey rsa:2048 -nodes -subj " + c.subject + " -keyout " + c.name +
           ".key -out " + c.name + ".csr";
    std::string ext;
    if (!c.san.empty()) {
      cmd += " && printf 'subjectAltName=" + c.san + "\\n' > " + c.name + ".ext";
      ext = " -extfile " + c.name + ".ext";
    }
    cmd += " && openssl x509 -req -in " + c.name + ".csr -CA ca.pem -CAkey ca.key " +
           "-CAcreateserial -days 2" + ext + " -out " + c.name + ".pem";
  }
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// A TLS channel trusting the CA of MakeCertificates, presenting client certificate `client`
// ("" = none).
inline std::shared_ptr<grpc::Channel> TlsChannel(const ServerProcess& s, const fs::path& dir,
                                                 const std::string& client) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadAll(dir / "ca.pem");
  if (!client.empty()) {
    ssl.pem_cert_chain = ReadAll(dir / (client + ".pem"));
    ssl.pem_private_key = ReadAll(dir / (client + ".key"));
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  return grpc::CreateCustomChannel(s.target(), grpc::SslCredentials(ssl), args);
}

}  // namespace modrwkv::e2e
