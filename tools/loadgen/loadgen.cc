// modrwkv-loadgen: drives a running server's Generate RPC at a fixed concurrency (closed loop) or
// request rate (open loop, Poisson arrivals) and reports what vLLM's serving benchmark reports:
// completed/failed requests, request throughput, output tokens/s, and TTFT, TPOT and ITL
// percentiles.
//
// Prompts are random token ids of a fixed length (sent as a TokenIds part, so the length is exact)
// and every request asks for exactly --output-tokens tokens (end-of-text ignored). With
// --shared-prefix-tokens the prompts start with the same tokens (a system prompt), marked as a
// prefix the server may cache; with --n every request asks for n completions of its prompt.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "modrwkv/v1/inference.grpc.pb.h"
#include "modrwkv/v1/sessions.grpc.pb.h"
#include "tools/cli/flags.h"

namespace modrwkv::loadgen {
namespace {

using Clock = std::chrono::steady_clock;
using v1::Inference;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct RequestStats {
  bool ok = false;
  bool image = false;  // the request carried the image
  bool audio = false;  // the request carried the audio clip
  std::string error;
  int output_tokens = 0;
  double ttft_ms = 0, e2e_ms = 0;
  std::vector<double> itl_ms;  // gaps between streamed messages, per token they carried
};

struct Config {
  std::string target;
  std::string token;
  int concurrency = 0;
  double rate = 0;
  int requests = 0;
  int prompt_tokens = 0;
  int output_tokens = 0;
  int vocab = 65536;
  uint64_t seed = 0;
  float temperature = 1.0f;      // 0 = greedy
  std::string image;             // encoded image bytes ("" = none)
  double image_fraction = 0;     // share of requests that carry the image
  std::string audio;             // encoded audio clip bytes ("" = none)
  double audio_fraction = 0;     // share of requests that carry the clip (drawn independently)
  std::string json_schema;       // structured output under this schema ("" = free text)
  int shared_prefix_tokens = 0;  // of prompt_tokens, the same in every request (prefix_parts 1)
  std::vector<int32_t> shared_prefix;  // those tokens, drawn once the vocabulary is known
  int n = 1;                           // completions per request (GenerateRequest.n)
  int priority = 0;                    // GenerateRequest.priority of every request
  bool sessions = false;  // closed loop: each client's requests are turns on one session
};

bool Draw(std::mt19937_64& rng, double fraction) {
  return std::uniform_real_distribution<double>(0, 1)(rng) < fraction;
}

// Random prompt ids: never 0 (end of text), within the served vocabulary.
std::uniform_int_distribution<int32_t> TokenIds(const Config& cfg) {
  return std::uniform_int_distribution<int32_t>(1, std::max(2, std::min(cfg.vocab, 65530) - 1));
}

// One request; a turn on `session` when it is not empty.
RequestStats RunOne(Inference::Stub& stub, const Config& cfg, std::mt19937_64& rng,
                    const std::string& session = "") {
  v1::GenerateRequest req;
  RequestStats st;
  if (!session.empty()) req.set_session_id(session);
  if (!cfg.image.empty() && Draw(rng, cfg.image_fraction)) {
    req.add_input()->mutable_image()->set_data(cfg.image);
    st.image = true;
  }
  if (!cfg.audio.empty() && Draw(rng, cfg.audio_fraction)) {
    req.add_input()->mutable_audio()->set_data(cfg.audio);
    st.audio = true;
  }
  if (!cfg.shared_prefix.empty()) {
    req.add_input()->mutable_tokens()->mutable_ids()->Assign(cfg.shared_prefix.begin(),
                                                             cfg.shared_prefix.end());
    if (req.input_size() == 1) req.set_prefix_parts(1);
  }
  auto* ids = req.add_input()->mutable_tokens();
  std::uniform_int_distribution<int32_t> id = TokenIds(cfg);
  for (int i = cfg.shared_prefix_tokens; i < cfg.prompt_tokens; ++i) ids->add_ids(id(rng));
  req.mutable_stop()->set_max_tokens(cfg.output_tokens);
  req.mutable_stop()->set_ignore_end_of_text(true);
  req.mutable_sampling()->set_temperature(cfg.temperature);
  req.mutable_sampling()->set_seed(rng());
  if (!cfg.json_schema.empty()) {
    req.mutable_sampling()->mutable_response_format()->set_json_schema(cfg.json_schema);
  }
  if (cfg.n > 1) req.set_n(cfg.n);
  req.set_priority(cfg.priority);

  grpc::ClientContext ctx;
  if (!cfg.token.empty()) ctx.AddMetadata("authorization", "Bearer " + cfg.token);
  const auto t0 = Clock::now();
  auto last = t0;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (!resp.has_chunk()) continue;
    const int n = resp.chunk().token_ids_size();
    if (n == 0) continue;
    const auto now = Clock::now();
    if (st.output_tokens == 0) {
      st.ttft_ms = Ms(now - t0);
    } else {
      const double gap = Ms(now - last) / n;
      for (int i = 0; i < n; ++i) st.itl_ms.push_back(gap);
    }
    st.output_tokens += n;
    last = now;
  }
  const grpc::Status s = reader->Finish();
  st.e2e_ms = Ms(Clock::now() - t0);
  st.ok = s.ok();
  if (!s.ok()) st.error = absl::StrFormat("%d %s", s.error_code(), s.error_message());
  return st;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(idx)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - lo);
}

int Run(const Config& cfg, const std::string& json_path) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(cfg.target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "error: cannot connect to %s\n", cfg.target.c_str());
    return 1;
  }
  auto stub = Inference::NewStub(channel);
  {  // vocab size for valid random ids
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok()) {
      const_cast<Config&>(cfg).vocab =
          info.tokenizer_vocab_size() > 0 ? info.tokenizer_vocab_size() : info.shape().vocab_size();
    }
  }
  {  // the prompt prefix every request shares, from a generator of its own
    std::mt19937_64 rng(cfg.seed ^ 0x5eedULL);
    std::uniform_int_distribution<int32_t> id = TokenIds(cfg);
    auto& prefix = const_cast<Config&>(cfg).shared_prefix;
    for (int i = 0; i < cfg.shared_prefix_tokens; ++i) prefix.push_back(id(rng));
  }

  // With --sessions, one session per client, made before the clock starts.
  std::vector<std::string> sessions(cfg.sessions ? cfg.concurrency : 0);
  auto sessions_stub = v1::Sessions::NewStub(channel);
  for (std::string& id : sessions) {
    grpc::ClientContext ctx;
    if (!cfg.token.empty()) ctx.AddMetadata("authorization", "Bearer " + cfg.token);
    v1::Session s;
    const grpc::Status st = sessions_stub->CreateSession(&ctx, v1::CreateSessionRequest(), &s);
    if (!st.ok()) {
      std::fprintf(stderr, "error: CreateSession: %s\n", st.error_message().c_str());
      return 1;
    }
    id = s.session_id();
  }

  std::mutex mu;
  std::vector<RequestStats> results;
  std::atomic<int> next{0};
  const auto start = Clock::now();
  if (cfg.rate <= 0) {
    // Closed loop: `concurrency` clients, each sends its next request when the last one ends.
    std::vector<std::thread> workers;
    for (int w = 0; w < cfg.concurrency; ++w) {
      workers.emplace_back([&, w] {
        std::mt19937_64 rng(cfg.seed * 1000003 + w);
        while (next.fetch_add(1) < cfg.requests) {
          RequestStats r = RunOne(*stub, cfg, rng, cfg.sessions ? sessions[w] : "");
          std::lock_guard<std::mutex> l(mu);
          results.push_back(std::move(r));
        }
      });
    }
    for (auto& t : workers) t.join();
  } else {
    // Open loop: Poisson arrivals at `rate` requests/s, each on its own thread.
    std::mt19937_64 rng(cfg.seed);
    std::exponential_distribution<double> gap(cfg.rate);
    std::vector<std::thread> inflight;
    auto when = start;
    for (int i = 0; i < cfg.requests; ++i) {
      std::this_thread::sleep_until(when);
      const uint64_t s = rng();
      inflight.emplace_back([&, s] {
        std::mt19937_64 r(s);
        RequestStats st = RunOne(*stub, cfg, r);
        std::lock_guard<std::mutex> l(mu);
        results.push_back(std::move(st));
      });
      when += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
    for (auto& t : inflight) t.join();
  }
  const double dur_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (const std::string& id : sessions) {
    grpc::ClientContext ctx;
    if (!cfg.token.empty()) ctx.AddMetadata("authorization", "Bearer " + cfg.token);
    v1::DeleteSessionRequest del;
    del.set_session_id(id);
    v1::DeleteSessionResponse out;
    sessions_stub->DeleteSession(&ctx, del, &out);  // best effort: the server's TTL is the rest
  }

  int completed = 0, failed = 0, images = 0, clips = 0;
  int64_t out_tokens = 0;
  std::vector<double> ttft, tpot, itl, e2e;
  std::string first_error;
  for (const RequestStats& r : results) {
    if (!r.ok) {
      ++failed;
      if (first_error.empty()) first_error = r.error;
      continue;
    }
    ++completed;
    images += r.image ? 1 : 0;
    clips += r.audio ? 1 : 0;
    out_tokens += r.output_tokens;
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    if (r.output_tokens > 1) tpot.push_back((r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1));
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
  }
  const std::string mode =
      cfg.rate > 0 ? absl::StrFormat("rate %.2f req/s", cfg.rate)
                   : absl::StrFormat("concurrency %d%s", cfg.concurrency,
                                     cfg.sessions ? " (turns on one session each)" : "");
  std::printf(
      "target %s | %s | prompt %d tokens (%d shared) | output %d tokens x %d | "
      "temperature %g | priority %d\n",
      cfg.target.c_str(), mode.c_str(), cfg.prompt_tokens, cfg.shared_prefix_tokens,
      cfg.output_tokens, cfg.n, cfg.temperature, cfg.priority);
  std::printf("completed %d  failed %d  duration %.2f s\n", completed, failed, dur_s);
  if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  std::printf("request throughput   %.3f req/s\n", completed / dur_s);
  std::printf("output throughput    %.1f tokens/s\n", out_tokens / dur_s);
  if (!cfg.image.empty()) {
    std::printf("image throughput     %.3f images/s (%d of %d completed requests had the image)\n",
                images / dur_s, images, completed);
  }
  if (!cfg.audio.empty()) {
    std::printf("audio throughput     %.3f clips/s (%d of %d completed requests had the clip)\n",
                clips / dur_s, clips, completed);
  }
  auto row = [](const char* name, const std::vector<double>& v) {
    double mean = 0;
    for (double x : v) mean += x;
    mean = v.empty() ? 0 : mean / v.size();
    std::printf("%-6s ms  mean %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f\n", name, mean,
                Percentile(v, 50), Percentile(v, 90), Percentile(v, 99));
  };
  row("TTFT", ttft);
  row("TPOT", tpot);
  row("ITL", itl);
  row("E2E", e2e);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << absl::StrFormat(
        "{\"mode\": \"%s\", \"completed\": %d, \"failed\": %d, \"duration_s\": %.4f, "
        "\"request_throughput\": %.4f, \"output_tokens_per_s\": %.3f, \"images_per_s\": %.4f, "
        "\"audio_clips_per_s\": %.4f, "
        "\"ttft_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
        "\"tpot_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
        "\"itl_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}}\n",
        mode, completed, failed, dur_s, completed / dur_s, out_tokens / dur_s, images / dur_s,
        clips / dur_s, Percentile(ttft, 50), Percentile(ttft, 90), Percentile(ttft, 99),
        Percentile(tpot, 50), Percentile(tpot, 90), Percentile(tpot, 99), Percentile(itl, 50),
        Percentile(itl, 90), Percentile(itl, 99));
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace modrwkv::loadgen

int main(int argc, char** argv) {
  using modrwkv::cli::Flags;
  Flags flags("modrwkv-loadgen", "--target HOST:PORT (--concurrency N | --rate R) [--requests N]",
              "Load generator for a running `modrwkv serve`: reports request and token throughput "
              "and TTFT / TPOT / ITL percentiles.");
  flags.Add("target", "localhost:50051", "server address")
      .Add("concurrency", "1", "closed loop: clients sending back to back")
      .Add("rate", "0", "open loop: Poisson arrivals per second (0 = use --concurrency)")
      .Add("requests", "32", "requests in total")
      .Add("prompt-tokens", "128", "prompt length in tokens")
      .Add("output-tokens", "64", "tokens generated per request")
      .Add("seed", "1", "random seed for prompts and sampling")
      .Add("temperature", "1", "sampling temperature (0 = greedy, as `modrwkv bench` decodes)")
      .Add("token", "", "bearer token, when the server requires one")
      .Add("image", "",
           "an image file sent (before the prompt tokens) with --image-fraction of the requests; "
           "run the server with --encoder-cache-bytes 0 to measure encoding, not the cache")
      .Add("image-fraction", "1", "share of requests that carry --image (mixed traffic below 1)")
      .Add("audio", "",
           "an audio file sent (after any image, before the prompt tokens) with --audio-fraction "
           "of the requests; run the server with --encoder-cache-bytes 0 to measure encoding")
      .Add("audio-fraction", "1", "share of requests that carry --audio (drawn independently)")
      .Add("json-schema", "",
           "a file holding a JSON Schema: every request asks for structured output under it")
      .Add("shared-prefix-tokens", "0",
           "the first tokens of every prompt are the same (a system prompt), marked as a prefix "
           "the server may cache (GenerateRequest.prefix_parts; only without --image/--audio)")
      .Add("n", "1", "completions per request (GenerateRequest.n); output tokens count them all")
      .Add("priority", "0",
           "GenerateRequest.priority of every request (admission order; within -100 and the "
           "server's --max-request-priority)")
      .AddBool("sessions",
               "closed loop: each client makes a session first and sends its requests as turns "
               "on it (a conversation; the prompt and output lengths are per turn)")
      .Add("json", "", "also write the summary as JSON to this file");
  auto parsed = flags.Parse(argc, argv, 1);
  if (!parsed.ok()) {
    std::fprintf(stderr, "error: %s\n\n%s", std::string(parsed.status().message()).c_str(),
                 flags.Usage().c_str());
    return 2;
  }
  if (!*parsed) return 0;
  modrwkv::loadgen::Config cfg;
  cfg.target = flags.Str("target");
  cfg.token = flags.Str("token");
  if (!flags.Str("json-schema").empty()) {
    std::ifstream in(flags.Str("json-schema"), std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "error: cannot read %s\n", flags.Str("json-schema").c_str());
      return 2;
    }
    cfg.json_schema.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto c = flags.Int("concurrency", 1, 4096);
  auto rate = flags.Float("rate", 0, 1e6);
  auto n = flags.Int("requests", 1, 1 << 24);
  auto p = flags.Int("prompt-tokens", 1, 1 << 20);
  auto o = flags.Int("output-tokens", 1, 1 << 20);
  auto seed = flags.Int("seed", 0, INT64_MAX);
  auto temperature = flags.Float("temperature", 0, 100);
  auto shared = flags.Int("shared-prefix-tokens", 0, 1 << 20);
  auto choices = flags.Int("n", 1, 128);
  auto priority = flags.Int("priority", INT32_MIN, INT32_MAX);  // the server checks the range
  for (const absl::Status& st :
       {c.status(), rate.status(), n.status(), p.status(), o.status(), seed.status(),
        temperature.status(), shared.status(), choices.status(), priority.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  cfg.concurrency = static_cast<int>(*c);
  cfg.rate = *rate;
  cfg.requests = static_cast<int>(*n);
  cfg.prompt_tokens = static_cast<int>(*p);
  cfg.output_tokens = static_cast<int>(*o);
  cfg.seed = static_cast<uint64_t>(*seed);
  cfg.temperature = static_cast<float>(*temperature);
  cfg.shared_prefix_tokens = static_cast<int>(*shared);
  cfg.n = static_cast<int>(*choices);
  cfg.priority = static_cast<int>(*priority);
  cfg.sessions = flags.Bool("sessions");
  if (cfg.sessions && (cfg.rate > 0 || cfg.n > 1 || cfg.shared_prefix_tokens > 0)) {
    std::fprintf(stderr,
                 "error: --sessions is for the closed loop (--concurrency), with --n 1 and no "
                 "--shared-prefix-tokens\n");
    return 2;
  }
  if (cfg.shared_prefix_tokens >= cfg.prompt_tokens) {
    std::fprintf(stderr, "error: --shared-prefix-tokens must be below --prompt-tokens\n");
    return 2;
  }
  for (const auto& [name, bytes, fraction] :
       {std::tuple{"image", &cfg.image, &cfg.image_fraction},
        std::tuple{"audio", &cfg.audio, &cfg.audio_fraction}}) {
    const std::string path = flags.Str(name);
    if (path.empty()) continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "error: cannot read --%s %s\n", name, path.c_str());
      return 2;
    }
    bytes->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    auto frac = flags.Float(absl::StrCat(name, "-fraction"), 0, 1);
    if (!frac.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(frac.status().message()).c_str());
      return 2;
    }
    *fraction = *frac;
  }
  return modrwkv::loadgen::Run(cfg, flags.Str("json"));
}
