// bench: prefill and decode throughput of the CPU backend on random-weight models of real shapes,
// next to this machine's measured read bandwidth and sgemm peak.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "encoders/multimodal/forecast.h"
#include "encoders/multimodal/model_bundle.h"
#include "encoders/vision/vision_bench.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_budget.h"
#include "engine/loader/model_loader.h"
#include "engine/sampling/sampler.h"
#include "engine/serving/scheduler.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/machine_limits.h"

namespace modrwkv::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct CaseResult {
  std::string shape, dtype;
  int threads = 0;
  double prefill_tps = 0, prefill_gflops = 0;
  std::vector<std::pair<int, double>> decode_tps;  // batch -> aggregate tokens/s
  double roofline_tps = 0;                         // batch-1 bound from weight bytes/bandwidth
  // The share of the value products' weights that batch-1 decode read (Model::counters: the
  // sparse value product skips zero activations); < 0 where nothing was counted.
  double sparse_ffn_read_b1 = -1;
};

// FLOPs per prompt token: two per weight of every matrix except the embedding table and the
// head (the head runs on the last position only).
double FlopsPerToken(const ModelConfig& c) {
  const double C = c.n_embd, F = c.ffn_size;
  const double lora = C * (2.0 * c.d_decay + 2.0 * c.d_aaa + 2.0 * c.d_mv + 2.0 * c.d_gate);
  return 2.0 * c.n_layer * (4 * C * C + 2 * C * F + lora);
}

std::vector<int32_t> Tokens(int n, int vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i)
    t[i] = 1 + static_cast<int32_t>((i * 7919 + salt * 104729) % (vocab - 1));
  return t;
}

// Waits for one request's finish.
class FinishWaiter : public StreamSink {
 public:
  void OnTokens(TokenEvent) override {}
  void OnFinish(FinishEvent e) override {
    std::lock_guard<std::mutex> l(mu_);
    event_ = std::move(e);
    cv_.notify_all();
  }
  FinishEvent Wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return event_.has_value(); });
    return *event_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<FinishEvent> event_;
};

struct FairnessResult {
  double short_ttft_ms = 0;  // a 20-token request submitted while the long prompt prefills
  double long_ttft_s = 0;    // the long prompt's own time to first token, with the short one
  double long_alone_s = 0;   // the long prompt's time to first token alone
};

// Prefill fairness through the real scheduler (default options): how long a short request
// waits behind a long prompt that is already prefilling.
absl::StatusOr<FairnessResult> PrefillFairness(Model& m, int long_len) {
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, LoadTokenizer("", ""));
  SchedulerOptions o;
  o.max_running = std::min(2, m.num_slots());
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> sched, Scheduler::Create(&m, tok.get(), o));
  const int vocab = m.config().vocab_size;
  auto request = [&](int n, int salt) {
    EngineRequest r;
    r.prompt.push_back(InputRows{Tokens(n, vocab, salt), {}});
    r.sampling.temperature = 0;
    r.stop.max_tokens = 1;
    return r;
  };
  FairnessResult out;
  {
    auto alone = std::make_shared<FinishWaiter>();
    MODRWKV_RETURN_IF_ERROR(sched->Submit(request(long_len, 1), alone).status());
    out.long_alone_s = absl::ToDoubleSeconds(alone->Wait().time_to_first_token);
  }
  auto long_sink = std::make_shared<FinishWaiter>(), short_sink = std::make_shared<FinishWaiter>();
  MODRWKV_RETURN_IF_ERROR(sched->Submit(request(long_len, 2), long_sink).status());
  // A tenth of the way into the long prefill.
  absl::SleepFor(absl::Seconds(out.long_alone_s / 10));
  MODRWKV_RETURN_IF_ERROR(sched->Submit(request(20, 3), short_sink).status());
  out.short_ttft_ms = absl::ToDoubleMilliseconds(short_sink->Wait().time_to_first_token);
  out.long_ttft_s = absl::ToDoubleSeconds(long_sink->Wait().time_to_first_token);
  return out;
}

absl::StatusOr<CaseResult> RunCase(Model& m, const std::string& shape, const std::string& dtype,
                                   int prompt_len, int decode_steps,
                                   const std::vector<int>& batches, double read_gbps) {
  CaseResult r;
  r.shape = shape;
  r.dtype = dtype;
  const ModelConfig& c = m.config();
  std::vector<StepResult> res;

  // Prefill: one prompt of prompt_len tokens, best of 3.
  const std::vector<int32_t> prompt = Tokens(prompt_len, c.vocab_size, 1);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    if (auto st = m.ResetSlot(0); !st.ok()) return st;
    StepEntry e;
    e.slot = 0;
    e.inputs = {InputRowsView::Tokens(prompt)};
    e.output = StepOutput::kLogits;
    const auto t0 = Clock::now();
    if (auto st = m.Step({e}, &res); !st.ok()) return st;
    best = std::min(best, Since(t0));
  }
  r.prefill_tps = prompt_len / best;
  r.prefill_gflops = FlopsPerToken(c) * prompt_len / best / 1e9;

  // Decode: B sequences, one token each per step, greedy sampling inside the step.
  SamplerConfig greedy;
  greedy.temperature = 0;
  for (int b : batches) {
    if (b > m.num_slots()) continue;
    std::vector<std::unique_ptr<Sampler>> samplers;
    std::vector<StepEntry> entries(b);
    std::vector<std::vector<int32_t>> seed_prompts(b), next(b, std::vector<int32_t>(1));
    for (int i = 0; i < b; ++i) {
      if (auto st = m.ResetSlot(i); !st.ok()) return st;
      auto s = Sampler::Create(greedy, c.vocab_size);
      if (!s.ok()) return s.status();
      samplers.push_back(*std::move(s));
      seed_prompts[i] = Tokens(8, c.vocab_size, i + 2);
      entries[i].slot = i;
      entries[i].sampler = samplers[i].get();
      entries[i].output = StepOutput::kSample;
      entries[i].inputs = {InputRowsView::Tokens(seed_prompts[i])};
    }
    if (auto st = m.Step(entries, &res); !st.ok()) return st;
    auto step = [&]() -> absl::Status {
      for (int i = 0; i < b; ++i) {
        next[i][0] = res[i].token;
        entries[i].inputs = {InputRowsView::Tokens(next[i])};
      }
      return m.Step(entries, &res);
    };
    for (int w = 0; w < 2; ++w) {
      if (auto st = step(); !st.ok()) return st;
    }
    const ModelCounters before = m.counters();
    const auto t0 = Clock::now();
    for (int s = 0; s < decode_steps; ++s) {
      if (auto st = step(); !st.ok()) return st;
    }
    r.decode_tps.emplace_back(b, static_cast<double>(b) * decode_steps / Since(t0));
    const ModelCounters after = m.counters();
    const int64_t inputs = after.sparse_ffn_inputs - before.sparse_ffn_inputs;
    if (b == 1 && inputs > 0) {
      r.sparse_ffn_read_b1 =
          static_cast<double>(after.sparse_ffn_inputs_read - before.sparse_ffn_inputs_read) /
          inputs;
    }
  }
  r.roofline_tps = read_gbps * 1e9 / m.info().decode_bytes_per_token;
  return r;
}

// Decode tokens/s of one sequence after `context` tokens: an RNN's cost per token does not grow
// with the context (a transformer's attention does). The prompt is prefilled in chunks.
absl::StatusOr<double> DecodeAtContext(Model& m, int context, int decode_steps) {
  const ModelConfig& c = m.config();
  if (auto st = m.ResetSlot(0); !st.ok()) return st;
  SamplerConfig greedy;
  greedy.temperature = 0;
  auto sampler = Sampler::Create(greedy, c.vocab_size);
  if (!sampler.ok()) return sampler.status();
  const std::vector<int32_t> prompt = Tokens(context, c.vocab_size, 7);
  std::vector<StepResult> res;
  StepEntry e;
  e.slot = 0;
  e.sampler = sampler->get();
  constexpr int kChunk = 1024;
  for (int pos = 0; pos < context; pos += kChunk) {
    const int n = std::min(kChunk, context - pos);
    e.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(prompt).subspan(pos, n))};
    e.output = pos + n == context ? StepOutput::kSample : StepOutput::kNone;
    if (auto st = m.Step({e}, &res); !st.ok()) return st;
  }
  int32_t tok[1];
  e.output = StepOutput::kSample;
  const auto t0 = Clock::now();
  for (int s = 0; s < decode_steps; ++s) {
    tok[0] = res[0].token;
    e.inputs = {InputRowsView::Tokens(tok)};
    if (auto st = m.Step({e}, &res); !st.ok()) return st;
  }
  return decode_steps / Since(t0);
}

// `bench --vision`: the tower's images/s per thread count and batch size, as a markdown table,
// against the machine's GEMM peak measured at the same thread count (the better of OpenBLAS's
// sgemm and the backend's PanelGemm on 2048^3, which the tower's projections run on).
int RunVisionBench(const Flags& flags, const std::vector<int>& thread_counts) {
  std::vector<int> batches;
  for (const std::string& s : flags.List("vision")) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v < 1 || v > 64) {
      return UsageError(flags, absl::InvalidArgumentError("--vision: bad batch size '" + s + "'"));
    }
    batches.push_back(v);
  }
  std::printf(
      "| threads | batch | images/s | ms per image | GFLOP/s | OpenBLAS sgemm GFLOP/s | PanelGemm "
      "GFLOP/s | of the better GEMM |\n|---|---|---|---|---|---|---|---|\n");
  for (int threads : thread_counts) {
    const MachineLimits lim = MeasureMachine(threads);
    const double peak = std::max(lim.sgemm_gflops, lim.panel_gemm_gflops);
    for (int batch : batches) {
      auto r = encoders::BenchVisionTower(lim.threads, batch, batch >= 4 ? 2 : 4);
      if (!r.ok()) return Fail(r.status());
      std::printf("| %d | %d | %.2f | %.0f | %.1f | %.1f | %.1f | %.0f%% |\n", r->threads, r->batch,
                  r->images_per_second, 1e3 / r->images_per_second, r->gflops, lim.sgemm_gflops,
                  lim.panel_gemm_gflops, 100 * r->gflops / peak);
      std::fflush(stdout);
    }
  }
  return 0;
}

// `bench --series`: a time-series model's encoder (WaveNet + adapter) alone and the whole
// forecast (encoder, the language model's prefill of the rows in 512-row chunks as the server's
// default step budget, the head) per series length, as a markdown table. The cost per step shows
// whether it grows linearly with the length.
int RunSeriesBench(const Flags& flags, const std::vector<int>& thread_counts) {
  std::vector<int> lengths;
  for (const std::string& s : flags.List("series")) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v < 4 || v > (1 << 22)) {
      return UsageError(flags, absl::InvalidArgumentError("--series: bad length '" + s + "'"));
    }
    lengths.push_back(v);
  }
  if (flags.Str("model").empty()) {
    return UsageError(
        flags, absl::InvalidArgumentError("--series needs --model DIR, a time-series model (e.g. "
                                          "make-demo-model --shape 0.1b --time-series --out DIR)"));
  }
  std::printf(
      "| threads | steps | rows | encoder series/s | encoder rows/s | forecast ms | us per step | "
      "forecast rows/s |\n|---|---|---|---|---|---|---|---|\n");
  for (int threads : thread_counts) {
    encoders::BundleOptions bo;
    bo.model = flags.Str("model");
    ModelOptions mo;
    mo.threads = threads;
    mo.num_slots = 1;
    auto bundle = encoders::OpenModelBundle(bo, mo, CheckpointOptionsFromFlags(flags), nullptr);
    if (!bundle.ok()) return Fail(bundle.status());
    if (!bundle->series) {
      return Fail(absl::InvalidArgumentError(flags.Str("model") + " is not a time-series model"));
    }
    const encoders::TimeSeriesPipeline& ts = *bundle->series;
    cpu::ThreadPool pool(threads > 0 ? threads : cpu::DetectCpuBudget().threads);
    for (int length : lengths) {
      if (length > ts.max_length()) {
        return Fail(absl::InvalidArgumentError(absl::StrFormat(
            "--series %d is longer than the model's max_length %d", length, ts.max_length())));
      }
      encoders::Series series;  // a seasonal random walk, deterministic
      series.length = length;
      series.channels = ts.channels();
      float level = 100;
      uint64_t x = 88172645463325252ull;
      for (int t = 0; t < length; ++t) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        level += static_cast<float>(static_cast<double>(x % 2001) / 1000.0 - 1.0);
        for (int c = 0; c < ts.channels(); ++c) {
          series.values.push_back(level + 10 * std::sin(6.2831853f * t / 12 + c));
        }
      }
      int reps = 0;
      auto t0 = Clock::now();
      do {
        auto rows = ts.EncodeSeries(series, "series", &pool);
        if (!rows.ok()) return Fail(rows.status());
        ++reps;
      } while (Since(t0) < 1.0 || reps < 3);
      const double encode_s = Since(t0) / reps;
      reps = 0;
      t0 = Clock::now();
      do {
        auto f = encoders::ForecastSeries(ts, *bundle->model, 0, series, ts.horizon(),
                                          bundle->series_prompt, &pool, 512);
        if (!f.ok()) return Fail(f.status());
        ++reps;
      } while (Since(t0) < 2.0 && reps < 3);
      const double forecast_s = Since(t0) / reps;
      const int rows = ts.RowsFor(length);
      std::printf("| %d | %d | %d | %.1f | %.0f | %.1f | %.2f | %.0f |\n", pool.size(), length,
                  rows, 1 / encode_s, rows / encode_s, 1e3 * forecast_s, 1e6 * forecast_s / length,
                  rows / forecast_s);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int RunBench(int argc, char** argv) {
  Flags flags("bench", "[--shape 0.1b,0.4b] [--dtype f32,bf16] [--threads 1,2]",
              "Measures prefill tokens/s (one prompt) and decode tokens/s (batch 1, 8, 32) on "
              "random-weight models of real shapes, next to this machine's measured read "
              "bandwidth and sgemm peak, and prints the ratios as a markdown table.");
  flags.Add("shape", "0.1b,0.4b", "model shapes: tiny, 0.1b, 0.4b, 1.5b, 2.9b, 7.2b")
      .Add("model", "", "benchmark this checkpoint instead of random weights")
      .Add("dtype", "f32,bf16",
           "weight types: f32, bf16, int8, int4 (the CPU), f16 (--device cuda)")
      .Add("device", "cpu", "the backend: cpu, or cuda / cuda:N (f32 or bf16 weights on a GPU)")
      .Add("threads", "0",
           "thread counts to run (0 = the CPUs this process may use), comma-separated")
      .Add("prompt-len", "512", "prefill prompt length")
      .Add("decode-steps", "32", "timed decode steps per batch size")
      .Add("batches", "1,8,32", "decode batch sizes")
      .Add("sparse-ffn", "on",
           "on, off or on,off: decode steps read only the channel mix's value weights of nonzero "
           "activations (ModelOptions::sparse_ffn); off rows are marked 'dense ffn'")
      .Add("json", "", "also write the results as JSON to this file")
      .Add("contexts", "",
           "instead: batch-1 decode tokens/s after each of these context lengths (e.g. "
           "1024,8192,65536)")
      .Add("fairness", "",
           "instead: through the scheduler, the time to first token of a 20-token request "
           "submitted while a prompt of this many tokens is prefilling (e.g. 100000)")
      .Add("vision", "",
           "instead: images/s of the SigLIP2-base/16@384 vision tower (random weights) at these "
           "batch sizes (e.g. 1,4), next to the sgemm peak")
      .Add("series", "",
           "instead: with --model DIR (a time-series model), the encoder's series/s and rows/s "
           "and the whole forecast's latency at these series lengths (e.g. 512,4096,32768)");
  AddCheckpointFlags(flags);
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto prompt_len = flags.Int("prompt-len", 1, 1 << 16);
  auto decode_steps = flags.Int("decode-steps", 1, 1 << 16);
  if (!prompt_len.ok()) return UsageError(flags, prompt_len.status());
  if (!decode_steps.ok()) return UsageError(flags, decode_steps.status());
  std::vector<int> batches, thread_counts;
  for (const std::string& s : flags.List("batches")) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v < 1 || v > 4096) {
      return UsageError(flags, absl::InvalidArgumentError("--batches: bad batch size '" + s + "'"));
    }
    batches.push_back(v);
  }
  for (const std::string& s : flags.List("threads")) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v < 0 || v > 1024) {
      return UsageError(flags, absl::InvalidArgumentError("--threads: bad count '" + s + "'"));
    }
    thread_counts.push_back(v);
  }
  if (!flags.Str("vision").empty()) return RunVisionBench(flags, thread_counts);
  if (!flags.Str("series").empty()) return RunSeriesBench(flags, thread_counts);
  const int max_batch = *std::max_element(batches.begin(), batches.end());

  std::vector<CaseResult> results;
  std::vector<MachineLimits> limits;
  if (!flags.Str("contexts").empty()) {
    std::printf(
        "| shape | weights | threads | context tokens | decode b1 t/s |\n|---|---|---|---|---|\n");
  }
  if (!flags.Str("fairness").empty()) {
    std::printf(
        "| shape | weights | threads | long prompt tokens | 20-token request TTFT ms | long "
        "prompt TTFT s | long prompt alone s |\n|---|---|---|---|---|---|---|\n");
  }
  for (int threads : thread_counts) {
    const MachineLimits lim = MeasureMachine(threads);
    limits.push_back(lim);
    std::fprintf(stderr,
                 "machine: %s | %d thread(s) | read %.1f GB/s | sgemm %.1f GFLOP/s (OpenBLAS "
                 "core %s) | PanelGemm %.1f GFLOP/s | integer products %.1f GOP/s peak, int4 "
                 "2048^3 %.1f | kernels %s\n",
                 lim.cpu_model.c_str(), lim.threads, lim.read_gbps, lim.sgemm_gflops,
                 lim.blas_core.c_str(), lim.panel_gemm_gflops, lim.int_dot_gops, lim.i4_gemm_gops,
                 lim.kernel_isa.c_str());
    const std::vector<std::string> shapes =
        flags.Str("model").empty() ? flags.List("shape") : std::vector<std::string>{"file"};
    for (const std::string& shape : shapes) {
      for (const std::string& dtype : flags.List("dtype")) {
        for (const std::string& sparse : flags.List("sparse-ffn")) {
          if (sparse != "on" && sparse != "off") {
            return UsageError(flags, absl::InvalidArgumentError("--sparse-ffn: '" + sparse + "'"));
          }
          ModelOptions o;
          o.sparse_ffn = sparse == "on";
          o.num_slots = max_batch;
          o.threads = threads;
          o.device = flags.Str("device");
          absl::StatusOr<ModelOptions::WeightType> type = ParseWeightType(dtype);
          if (!type.ok() || *type == ModelOptions::WeightType::kAuto) {
            return UsageError(flags, absl::InvalidArgumentError("--dtype: '" + dtype + "'"));
          }
          o.weight_type = *type;
          absl::StatusOr<std::unique_ptr<Model>> model;
          if (shape == "file") {
            model = LoadModel(flags.Str("model"), o, CheckpointOptionsFromFlags(flags));
          } else {
            auto spec = RandomSpecForShape(shape);
            if (!spec.ok()) return UsageError(flags, spec.status());
            spec->vocab_size = 65536;
            spec->seed = 2024;  // the weights tools/bench_reference.py uses
            auto tensors = MakeRandomRwkv7(*spec);
            if (!tensors.ok()) return Fail(tensors.status());
            model = CreateModel(ViewsOf(*tensors), o);
          }
          if (!model.ok()) return Fail(model.status());
          std::fprintf(stderr, "running %s %s, %d thread(s)...\n", shape.c_str(), dtype.c_str(),
                       lim.threads);
          if (!flags.Str("fairness").empty()) {
            int long_len;
            if (!absl::SimpleAtoi(flags.Str("fairness"), &long_len) || long_len < 1 ||
                long_len > (1 << 24)) {
              return UsageError(flags, absl::InvalidArgumentError("--fairness: bad length"));
            }
            auto f = PrefillFairness(**model, long_len);
            if (!f.ok()) return Fail(f.status());
            std::printf("| %s | %s | %d | %d | %.1f | %.2f | %.2f |\n", shape.c_str(),
                        dtype.c_str(), lim.threads, long_len, f->short_ttft_ms, f->long_ttft_s,
                        f->long_alone_s);
            std::fflush(stdout);
            continue;
          }
          if (!flags.Str("contexts").empty()) {
            for (const std::string& cs : flags.List("contexts")) {
              int ctx;
              if (!absl::SimpleAtoi(cs, &ctx) || ctx < 1 || ctx > (1 << 24)) {
                return UsageError(
                    flags, absl::InvalidArgumentError("--contexts: bad length '" + cs + "'"));
              }
              auto tps = DecodeAtContext(**model, ctx, static_cast<int>(*decode_steps));
              if (!tps.ok()) return Fail(tps.status());
              std::printf("| %s | %s | %d | %d | %.2f |\n", shape.c_str(), dtype.c_str(),
                          lim.threads, ctx, *tps);
              std::fflush(stdout);
            }
            continue;
          }
          auto r = RunCase(**model, shape, o.sparse_ffn ? dtype : dtype + " dense ffn",
                           static_cast<int>(*prompt_len), static_cast<int>(*decode_steps), batches,
                           lim.read_gbps);
          if (!r.ok()) return Fail(r.status());
          r->threads = lim.threads;
          results.push_back(*r);
        }
      }
    }
  }

  if (results.empty()) return 0;  // --contexts / --fairness printed their own tables
  // Markdown table.
  std::printf(
      "| shape | weights | threads | prefill t/s | prefill GFLOP/s | %% of GEMM peak |"
      " decode b1 t/s | b1 roofline t/s | %% of roofline |");
  for (int b : batches) {
    if (b != 1) std::printf(" decode b%d t/s |", b);
  }
  std::printf(" b%d / b1 |\n|---|---|---|---|---|---|---|---|---|", max_batch);
  for (int b : batches) {
    if (b != 1) std::printf("---|");
  }
  std::printf("---|\n");
  for (const CaseResult& r : results) {
    const MachineLimits& lim = *std::find_if(limits.begin(), limits.end(),
                                             [&](auto& l) { return l.threads == r.threads; });
    double b1 = 0, bmax = 0;
    for (auto [b, tps] : r.decode_tps) {
      if (b == 1) b1 = tps;
      if (b == max_batch) bmax = tps;
    }
    // int4's products are integer multiply-adds: judged against their own instruction peak.
    const double peak =
        r.dtype.rfind("int4", 0) == 0 && lim.int_dot_gops > 0 ? lim.int_dot_gops : lim.sgemm_gflops;
    std::printf("| %s | %s | %d | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% |", r.shape.c_str(),
                r.dtype.c_str(), r.threads, r.prefill_tps, r.prefill_gflops,
                100 * r.prefill_gflops / peak, b1, r.roofline_tps, 100 * b1 / r.roofline_tps);
    for (auto [b, tps] : r.decode_tps) {
      if (b != 1) std::printf(" %.1f |", tps);
    }
    std::printf(" %.1fx |\n", b1 > 0 ? bmax / b1 : 0.0);
  }
  for (const CaseResult& r : results) {
    if (r.sparse_ffn_read_b1 < 0) continue;
    std::printf(
        "\n%s %s, %d thread(s): batch-1 decode read %.1f%% of the value weights "
        "(the rest had zero activations)",
        r.shape.c_str(), r.dtype.c_str(), r.threads, 100 * r.sparse_ffn_read_b1);
  }
  std::printf(
      "\n\nGEMM peak: the sgemm peak for f32, bf16 and int8 weights; for int4 the integer "
      "products' instruction peak (x rounded to int8, multiply-adds of bytes into int32)\n");
  for (const MachineLimits& l : limits) {
    std::printf(
        "\nmachine (%d thread(s)): %s; read bandwidth %.1f GB/s; sgemm 2048^3 %.1f GFLOP/s "
        "(OpenBLAS core %s); our PanelGemm 2048^3 %.1f GFLOP/s; integer products' peak %.1f "
        "GOP/s, our int4 product 2048^3 %.1f GOP/s; kernels %s\n",
        l.threads, l.cpu_model.c_str(), l.read_gbps, l.sgemm_gflops, l.blas_core.c_str(),
        l.panel_gemm_gflops, l.int_dot_gops, l.i4_gemm_gops, l.kernel_isa.c_str());
  }

  if (!flags.Str("json").empty()) {
    std::ofstream out(flags.Str("json"));
    out << "{\"machine\": [";
    for (size_t i = 0; i < limits.size(); ++i) {
      const MachineLimits& l = limits[i];
      out << (i ? "," : "")
          << absl::StrFormat(
                 "{\"threads\": %d, \"read_gbps\": %.3f, \"sgemm_gflops\": %.3f, "
                 "\"panel_gemm_gflops\": %.3f, \"int_dot_gops\": %.3f, \"i4_gemm_gops\": %.3f, "
                 "\"blas_core\": \"%s\", \"kernels\": \"%s\"}",
                 l.threads, l.read_gbps, l.sgemm_gflops, l.panel_gemm_gflops, l.int_dot_gops,
                 l.i4_gemm_gops, l.blas_core, l.kernel_isa);
    }
    out << "], \"results\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const CaseResult& r = results[i];
      std::vector<std::string> d;
      for (auto [b, tps] : r.decode_tps) d.push_back(absl::StrFormat("\"%d\": %.3f", b, tps));
      out << (i ? "," : "")
          << absl::StrFormat(
                 "{\"shape\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, "
                 "\"prefill_tps\": %.3f, \"prefill_gflops\": %.3f, "
                 "\"roofline_tps\": %.3f, \"sparse_ffn_read_b1\": %.4f, \"decode_tps\": {%s}}",
                 r.shape, r.dtype, r.threads, r.prefill_tps, r.prefill_gflops, r.roofline_tps,
                 r.sparse_ffn_read_b1, absl::StrJoin(d, ", "));
    }
    out << "]}\n";
  }
  return 0;
}

}  // namespace modrwkv::cli
