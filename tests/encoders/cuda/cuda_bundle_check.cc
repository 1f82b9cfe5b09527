// The model bundle with the language model on a GPU (encoders/multimodal/model_bundle.cc places
// the encoders and adapters there too): on the trained vision demo, the encoder and adapter land
// on the GPU, plain f32 and with TF32 products (BundleOptions::encoder_tf32), and the rows they
// give answer held-out questions about pictures exactly as the CPU's rows do. GPU cases skip
// without a device; run on the CPU through the CUDA emulator (tests/engine/cuda/emu).
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "encoders/multimodal/model_bundle.h"
#include "encoders/timeseries/series_csv.h"
#include "engine/cpu/thread_pool.h"
#include "engine/serving/scheduler.h"
#include "engine/text/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/encoders/cuda/check_util.h"
#include "tests/engine/serving/collecting_sink.h"

namespace modrwkv::encoders::cuda {
namespace {

// A project file relative to the working directory (tools/device-check.sh runs the packed binary
// from a copy of the repository root on another machine), else in the source tree; "" if neither.
std::string Asset(const std::string& relative) {
  for (const std::string& p : {relative, std::string(MODRWKV_SOURCE_DIR) + "/" + relative}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Question {
  std::string image, question, answer;
};

// The first `n` rows of the held-out set (file, question, answer).
std::vector<Question> HeldOut(const std::string& dir, int n) {
  std::vector<Question> out;
  std::istringstream in(ReadAll(dir + "/answers.tsv"));
  std::string line;
  std::getline(in, line);  // the header
  while (static_cast<int>(out.size()) < n && std::getline(in, line)) {
    std::vector<std::string> cols = absl::StrSplit(line, '\t');
    if (cols.size() == 3) out.push_back({dir + "/" + cols[0], cols[1], cols[2]});
  }
  return out;
}

// A demo model opened three ways: on the CPU, with the language model (and so the encoders and
// adapters) on the GPU, and the same with TF32 encoder products; and a scheduler over the CPU's
// language model, which answers every path's rows (so an answer depends on the rows alone).
struct ThreeWays {
  std::unique_ptr<Tokenizer> tok;
  ModelBundle cpu, gpu, tf32;
  std::unique_ptr<Scheduler> sched;

  // Greedy tokens after `rows` then `text` (stop at the turn end, 24, as the demos' manifests say).
  std::vector<int32_t> Answer(const std::vector<float>& rows, const std::string& text) {
    EngineRequest r;
    r.prompt = {InputRows{{}, rows}, InputRows{tok->Encode(text), {}}};
    r.sampling.temperature = 0;
    r.stop.stop_token_ids = {24};
    r.stop.max_tokens = 24;
    auto sink = std::make_shared<CollectingSink>();
    EXPECT_TRUE(sched->Submit(r, sink).ok());
    const FinishEvent f = sink->Wait();
    EXPECT_TRUE(f.status.ok()) << f.status;
    return sink->tokens();
  }
};

// Opens `model` (a demo folder) three ways; fails the test (and returns null) when it cannot.
std::unique_ptr<ThreeWays> Open(const std::string& model, const std::string& vocab) {
  auto w = std::make_unique<ThreeWays>();
  auto tok = Tokenizer::LoadFile(vocab);
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return nullptr;
  w->tok = *std::move(tok);
  ModelOptions cpu_options;
  cpu_options.threads = 2;
  cpu_options.num_slots = 1;
  ModelOptions gpu_options = cpu_options;
  gpu_options.device = "cuda";
  BundleOptions bo;
  bo.model = model;
  auto cpu = OpenModelBundle(bo, cpu_options, {}, w->tok.get());
  auto gpu = OpenModelBundle(bo, gpu_options, {}, w->tok.get());
  bo.encoder_tf32 = true;
  auto tf32 = OpenModelBundle(bo, gpu_options, {}, w->tok.get());
  EXPECT_TRUE(cpu.ok() && gpu.ok() && tf32.ok()) << gpu.status() << tf32.status();
  if (!cpu.ok() || !gpu.ok() || !tf32.ok()) return nullptr;
  w->cpu = *std::move(cpu);
  w->gpu = *std::move(gpu);
  w->tf32 = *std::move(tf32);
  SchedulerOptions so;
  so.max_running = 1;
  w->sched = Scheduler::Create(w->cpu.model.get(), w->tok.get(), so).value();
  return w;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// The rows' distance from the CPU's: plain f32 on the GPU within float rounding, TF32 within its
// own rounding (measured 1.1e-3 to 2.7e-3 of the rows' standard deviation on the three demos)
// and visibly different (the option reached cuBLAS through the bundle).
void ExpectRowsClose(double worst_f32, double worst_tf32) {
  EXPECT_LT(worst_f32, 1e-4);
  EXPECT_LT(worst_tf32, 5e-3);
  EXPECT_GT(worst_tf32, 1e-5) << "encoder_tf32 did not reach cuBLAS";
  ::testing::Test::RecordProperty("rows_rel_err",
                                  absl::StrFormat("f32 %.3g, tf32 %.3g", worst_f32, worst_tf32));
}

TEST(CudaBundleTest, TheVisionDemoSeesTheSameWithItsEncoderOnTheGpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const std::string model = Asset("assets/vision-demo"),
                    vocab = Asset("assets/rwkv_vocab_v20230424.txt"),
                    heldout = Asset("tests/golden/vision_demo/heldout");
  if (model.empty() || vocab.empty() || heldout.empty()) GTEST_SKIP() << "demo assets not found";
  const std::unique_ptr<ThreeWays> w = Open(model, vocab);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->cpu.vision && w->gpu.vision && w->tf32.vision);
  EXPECT_FALSE(w->cpu.vision->tower().layers_placed());
  for (const ModelBundle* b : {&w->gpu, &w->tf32}) {
    EXPECT_TRUE(b->vision->tower().layers_placed());
    EXPECT_TRUE(b->vision->tower().stem_placed());
    EXPECT_TRUE(b->vision->adapter_placed());
  }
  cpu::ThreadPool pool(2);
  int right = 0;
  double worst_f32 = 0, worst_tf32 = 0;
  const std::vector<Question> questions = HeldOut(heldout, 6);
  ASSERT_EQ(questions.size(), 6u);
  for (const Question& q : questions) {
    SCOPED_TRACE(q.image + ": " + q.question);
    const std::string bytes = ReadAll(q.image);
    auto c = w->cpu.vision->EncodeImage(Bytes(bytes), "image", &pool);
    auto g = w->gpu.vision->EncodeImage(Bytes(bytes), "image", &pool);
    auto t = w->tf32.vision->EncodeImage(Bytes(bytes), "image", &pool);
    ASSERT_TRUE(c.ok() && g.ok() && t.ok()) << g.status() << t.status();
    worst_f32 = std::max(worst_f32, RelErr(c->data, g->data));
    worst_tf32 = std::max(worst_tf32, RelErr(c->data, t->data));
    // The demo's chat template around the question.
    const std::string text = "\x16User: " + q.question + "\x17\x16" + "Assistant:";
    const std::vector<int32_t> want = w->Answer(c->data, text);
    EXPECT_EQ(w->Answer(g->data, text), want);
    EXPECT_EQ(w->Answer(t->data, text), want);
    right += w->tok->Decode(want).value_or("").find(q.answer) != std::string::npos;
  }
  ExpectRowsClose(worst_f32, worst_tf32);
  EXPECT_GE(right, 5) << "the demo should see";  // the CPU path's own answers
}

// The audio demo (a Whisper-shaped encoder, generation A's speech adapter): transcripts of
// held-out clips the same from the GPU's rows as from the CPU's.
TEST(CudaBundleTest, TheAudioDemoHearsTheSameWithItsEncoderOnTheGpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const std::string model = Asset("assets/audio-demo"),
                    vocab = Asset("assets/rwkv_vocab_v20230424.txt"),
                    heldout = Asset("tests/golden/audio_demo/heldout");
  if (model.empty() || vocab.empty() || heldout.empty()) GTEST_SKIP() << "demo assets not found";
  const std::unique_ptr<ThreeWays> w = Open(model, vocab);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->cpu.audio && w->gpu.audio && w->tf32.audio);
  EXPECT_FALSE(w->cpu.audio->layers_placed());
  for (const ModelBundle* b : {&w->gpu, &w->tf32}) {
    EXPECT_TRUE(b->audio->layers_placed());
    EXPECT_TRUE(b->audio->stem_placed());
    EXPECT_TRUE(b->audio->adapter_placed());
  }
  cpu::ThreadPool pool(2);
  int right = 0;
  double worst_f32 = 0, worst_tf32 = 0;
  std::istringstream in(ReadAll(heldout + "/transcripts.tsv"));
  std::string line;
  std::getline(in, line);  // the header
  std::getline(in, line);  // clip_000, which the demo mishears ("go yes start") on any device
  // One clip: the emulator's cuBLAS is a plain loop, and a clip is ~20 s of it each way.
  for (int i = 0; i < 1 && std::getline(in, line); ++i) {
    const std::vector<std::string> cols = absl::StrSplit(line, '\t');
    ASSERT_EQ(cols.size(), 2u) << line;
    SCOPED_TRACE(cols[0]);
    const std::string bytes = ReadAll(heldout + "/" + cols[0]);
    auto c = w->cpu.audio->EncodeClip(Bytes(bytes), "audio", &pool);
    auto g = w->gpu.audio->EncodeClip(Bytes(bytes), "audio", &pool);
    auto t = w->tf32.audio->EncodeClip(Bytes(bytes), "audio", &pool);
    ASSERT_TRUE(c.ok() && g.ok() && t.ok()) << g.status() << t.status();
    worst_f32 = std::max(worst_f32, RelErr(c->data, g->data));
    worst_tf32 = std::max(worst_tf32, RelErr(c->data, t->data));
    const std::string text =
        "\x16"
        "Assistant:";  // the demo's prompt, as it was trained
    const std::vector<int32_t> want = w->Answer(c->data, text);
    EXPECT_EQ(w->Answer(g->data, text), want);
    EXPECT_EQ(w->Answer(t->data, text), want);
    const std::string said = w->tok->Decode(want).value_or("");
    right += said.find(cols[1]) != std::string::npos;
    RecordProperty(cols[0], said);
  }
  ExpectRowsClose(worst_f32, worst_tf32);
  EXPECT_EQ(right, 1) << "the demo should hear";
}

// The time-series demo (a WaveNet, which stays on the CPU, and its adapter, which goes to the
// GPU): the rows of held-out series as the CPU's.
TEST(CudaBundleTest, TheSeriesDemoEncodesTheSameWithItsAdapterOnTheGpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const std::string model = Asset("assets/ts-demo"),
                    vocab = Asset("assets/rwkv_vocab_v20230424.txt"),
                    heldout = Asset("tests/golden/ts_demo/heldout");
  if (model.empty() || vocab.empty() || heldout.empty()) GTEST_SKIP() << "demo assets not found";
  const std::unique_ptr<ThreeWays> w = Open(model, vocab);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->cpu.series && w->gpu.series && w->tf32.series);
  EXPECT_FALSE(w->cpu.series->adapter().placed());
  EXPECT_TRUE(w->gpu.series->adapter().placed());
  EXPECT_TRUE(w->tf32.series->adapter().placed());
  cpu::ThreadPool pool(2);
  double worst_f32 = 0, worst_tf32 = 0;
  for (const char* name : {"airline", "co2"}) {
    SCOPED_TRACE(name);
    auto csv = ParseSeriesCsv(ReadAll(heldout + "/" + name + "_input.csv"), name);
    ASSERT_TRUE(csv.ok()) << csv.status();
    auto c = w->cpu.series->EncodeSeries(csv->series, "series", &pool);
    auto g = w->gpu.series->EncodeSeries(csv->series, "series", &pool);
    auto t = w->tf32.series->EncodeSeries(csv->series, "series", &pool);
    ASSERT_TRUE(c.ok() && g.ok() && t.ok()) << g.status() << t.status();
    worst_f32 = std::max(worst_f32, RelErr(c->data, g->data));
    worst_tf32 = std::max(worst_tf32, RelErr(c->data, t->data));
  }
  ExpectRowsClose(worst_f32, worst_tf32);
}

}  // namespace
}  // namespace modrwkv::encoders::cuda
