// The `modrwkv` binary end to end: every subcommand, its output contract and its usage errors.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/checkpoint/atomic_file.h"
#include "engine/checkpoint/zip_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/shell_run.h"
#include "tests/test_paths.h"

namespace {

namespace fs = std::filesystem;

using CliRun = modrwkv::testing_shell::ShellRun;

CliRun Cli(const std::string& args) {
  return modrwkv::testing_shell::RunShell(std::string(MODRWKV_CLI) + " " + args);
}

const std::string kVocab = modrwkv::testing_paths::WorldVocab();

class CliTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        new fs::path(fs::temp_directory_path() / ("modrwkv_cli_test_" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    CliRun r = Cli("make-demo-model --out " + dir_->string() + " --seed 3");
    ASSERT_EQ(r.code, 0) << r.err;
    r = Cli("make-demo-model --out " + (*dir_ / "st").string() +
            " --format safetensors --dtype f32 --seed 3");
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Model() { return (*dir_ / "model.pth").string(); }
  static fs::path* dir_;
};
fs::path* CliTest::dir_ = nullptr;

TEST_F(CliTest, TokenizeMatchesOfficialVectors) {
  // popen runs /bin/sh, which has no $'..' quoting: pass the bytes through a file.
  const fs::path f = *dir_ / "prompt.txt";
  std::ofstream(f) << "User: hi\n\nAssistant:";
  CliRun r = Cli("tokenize --vocab " + kVocab + " --text-file " + f.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "24281 59 4571 261 5585 41693 59\n");
}

TEST_F(CliTest, DetokenizeWritesRawBytes) {
  CliRun r = Cli("detokenize --vocab " + kVocab + " --tokens \"24281 59 4571 261 5585 41693 59\"");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "User: hi\n\nAssistant:");
  r = Cli("detokenize --vocab " + kVocab + " --tokens \"1 x\"");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("'x' is not a token id"), std::string::npos) << r.err;
}

TEST_F(CliTest, InfoReportsShapes) {
  CliRun r = Cli("info --model " + Model());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("layers           2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vocab            65536"), std::string::npos);
  EXPECT_NE(r.out.find("weight dtype     bf16"), std::string::npos);
  EXPECT_NE(r.out.find("state per seq    67584 bytes"), std::string::npos);
}

// --dtype f16 is a CUDA option: on the CPU it is refused with a message that says so, and an
// unknown dtype names the choices.
TEST_F(CliTest, F16WeightsAreACudaOption) {
  const std::string out = (*dir_ / "f16.bin").string();
  CliRun r = Cli("logits --model " + Model() + " --dtype f16 --tokens 1 --out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("dtype f16 is built for the CUDA backend only"), std::string::npos) << r.err;
  r = Cli("logits --model " + Model() + " --dtype f8 --tokens 1 --out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("auto, f32, bf16, int8, int4 or f16"), std::string::npos) << r.err;
  r = Cli("logits --model " + Model() + " --dtype int4 --tokens 1 --out " + out);
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(CliTest, LogitsFileHasVocabFloatsAndAgreesAcrossFormats) {
  const std::string a = (*dir_ / "a.bin").string(), b = (*dir_ / "b.bin").string();
  CliRun r = Cli("logits --model " + Model() + " --dtype f32 --tokens \"1 2 3\" --out " + a);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fs::file_size(a), 65536u * 4);
  // The same seed in f32 safetensors: close (bf16 rounding of the .pth only).
  r = Cli("logits --model " + (*dir_ / "st" / "model.safetensors").string() +
          " --tokens 1,2,3 --out " + b);
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  std::vector<float> la(65536), lb(65536);
  fa.read(reinterpret_cast<char*>(la.data()), 65536 * 4);
  fb.read(reinterpret_cast<char*>(lb.data()), 65536 * 4);
  double maxd = 0, maxv = 0;
  for (int i = 0; i < 65536; ++i) {
    maxd = std::max(maxd, std::abs(double(la[i]) - lb[i]));
    maxv = std::max(maxv, std::abs(double(lb[i])));
  }
  EXPECT_GT(maxv, 0.1);
  EXPECT_LT(maxd, 0.05 * maxv);
}

// `logits --image` on the whole-forward fixture (tests/golden/vision_forward): the final logits
// after the image's rows and the prompt equal the official generation A / B model's, for a bare
// checkpoint with --vision-encoder and for a model directory with a manifest.
TEST_F(CliTest, LogitsAfterAnImageMatchTheOfficialModel) {
  const fs::path fx = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "vision_forward";
  auto last_row = [](const fs::path& file) {
    std::ifstream f(file, std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<float> v(256);
    std::memcpy(v.data(), b.data() + b.size() - 256 * 4, 256 * 4);
    return v;
  };
  auto max_rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < b.size(); ++i) {
      d = std::max(d, std::abs(double(a[i]) - b[i]));
      m = std::max(m, std::abs(double(b[i])));
    }
    return d / m;
  };
  const std::string out = (*dir_ / "image_logits.bin").string();
  // Generation A, bare: the prompt of the fixture's manifest ("\x16User: Hi\x17Assistant:").
  const std::string gen_a_tokens =
      "23 86 116 102 115 59 33 73 106 24 66 116 116 106 116 117 98 111 117 59";
  CliRun r = Cli("logits --model " + (fx / "rwkv-0.pth").string() + " --vision-encoder " +
                 (fx / "encoder").string() + " --image " + (fx / "image.png").string() +
                 " --tokens \"" + gen_a_tokens + "\" --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_LT(max_rel(last_row(out), last_row(fx / "gen_a_logits.bin")), 1e-4);
  // Without the image the logits differ: the image is really in the sequence.
  r = Cli("logits --model " + (fx / "rwkv-0.pth").string() + " --tokens \"" + gen_a_tokens +
          "\" --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(max_rel(last_row(out), last_row(fx / "gen_a_logits.bin")), 1e-3);
  // Generation B from a model directory; the image rows go between the marker tokens 250 / 251.
  const fs::path model_dir = *dir_ / "gen_b";
  fs::create_directories(model_dir);
  std::ofstream(model_dir / "modrwkv-model.json")
      << "{\"format\": 1, \"checkpoint\": \"" << (fx / "rwkv-b.pth").string()
      << "\", \"vision\": {\"encoder\": \"" << (fx / "encoder").string()
      << "\", \"image_start\": 250, \"image_end\": 251}}";
  r = Cli("logits --model " + model_dir.string() + " --image " + (fx / "image.png").string() +
          " --before \"23 86 116 102 115 59\" --tokens \"73 106 24 23 66 116 116 106 116 117 98 "
          "111 117 59\" --out " +
          out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_LT(max_rel(last_row(out), last_row(fx / "gen_b_logits.bin")), 1e-4);
  // An image for a text model is a clear error.
  r = Cli("logits --model " + Model() + " --image " + (fx / "image.png").string() +
          " --tokens 1 --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--image"), std::string::npos) << r.err;
}

// `logits --<flag> FILE --tokens ...` on the trained demo `demo` for each case of
// tests/golden/<golden>/logits_top10.json equals the PyTorch model's top-10 logits (same bf16
// weights). `out` is a scratch file.
void ExpectDemoLogitsMatchPyTorch(const std::string& demo, const std::string& golden,
                                  const std::string& flag, const std::string& out) {
  const fs::path model = fs::path(MODRWKV_SOURCE_DIR) / "assets" / demo;
  const fs::path dir = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / golden;
  std::ifstream f(dir / "logits_top10.json");
  const nlohmann::json cases = nlohmann::json::parse(f)["cases"];
  ASSERT_FALSE(cases.empty());
  for (const nlohmann::json& c : cases) {
    SCOPED_TRACE(c["file"].get<std::string>());
    std::string tokens;
    for (int id : c["prompt_tokens"]) tokens += std::to_string(id) + " ";
    CliRun r = Cli("logits --model " + model.string() + " --" + flag + " " +
                   (dir / "heldout" / c["file"].get<std::string>()).string() + " --tokens \"" +
                   tokens + "\" --out " + out);
    ASSERT_EQ(r.code, 0) << r.err;
    std::ifstream lf(out, std::ios::binary);
    std::vector<float> logits(65536);
    lf.read(reinterpret_cast<char*>(logits.data()), 65536 * 4);
    ASSERT_TRUE(lf);
    const std::vector<int> ids = c["top10_ids"].get<std::vector<int>>();
    const std::vector<float> values = c["top10_values"].get<std::vector<float>>();
    EXPECT_EQ(std::max_element(logits.begin(), logits.end()) - logits.begin(), ids[0]);
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_NEAR(logits[ids[i]], values[i], 1e-3 * std::abs(values[0])) << "token " << ids[i];
    }
  }
}

// The trained vision demo: `logits --image` on held-out images.
TEST_F(CliTest, DemoModelLogitsAfterAnImageMatchPyTorch) {
  ExpectDemoLogitsMatchPyTorch("vision-demo", "vision_demo", "image",
                               (*dir_ / "demo_logits.bin").string());
}

// `generate --image` answers about the shipped example images, from the model directory (chat
// template from the manifest, --question) and from the bare checkpoint plus encoder folder
// (--prompt with the official prompt format).
TEST_F(CliTest, GenerateAnswersAboutAnImageInBothModelForms) {
  const fs::path demo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "vision-demo";
  CliRun r = Cli("generate --model " + demo.string() + " --image " +
                 (demo / "examples" / "red_circle.png").string() +
                 " --question 'What shape is in the picture?'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, " A red circle.\n");
  r = Cli("generate --model " + (demo / "rwkv-0.pth").string() + " --vision-encoder " +
          (demo / "encoder").string() + " --image " +
          (demo / "examples" / "green_cross.jpg").string() +
          " --prompt \"$(printf '\\026User: Where is the shape?\\027\\026Assistant:')\" "
          "--temperature 0 "
          "--stop-token 24 --max-tokens 16");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, " In the bottom left corner.\n");
  // An image for a text model is a clear error.
  r = Cli("generate --model " + Model() + " --image " +
          (demo / "examples" / "red_circle.png").string() + " --prompt hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no vision encoder"), std::string::npos) << r.err;
}

// The trained speech demo: `logits --audio` on held-out FLAC clips (FFmpeg decode, log-mel,
// Whisper encoder, truncation, speech adapter and RWKV7 together).
TEST_F(CliTest, DemoModelLogitsAfterAClipMatchPyTorch) {
  ExpectDemoLogitsMatchPyTorch("audio-demo", "audio_demo", "audio",
                               (*dir_ / "audio_logits.bin").string());
}

// `generate --audio` transcribes a shipped example from the model directory (the clip alone: the
// speech prompt) and from the bare checkpoint plus encoder folder (--prompt, raw).
TEST_F(CliTest, GenerateTranscribesAClipInBothModelForms) {
  const fs::path demo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "audio-demo";
  const std::string clip = (demo / "examples" / "three_one_four.wav").string();
  CliRun r = Cli("generate --model " + demo.string() + " --audio " + clip);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, " three one four\n");
  r = Cli("generate --model " + (demo / "rwkv-0.pth").string() + " --audio-encoder " +
          (demo / "encoder").string() + " --audio " + clip +
          " --prompt \"$(printf '\\026Assistant:')\" --temperature 0 --stop-token 24 "
          "--max-tokens 16");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, " three one four\n");
  // A clip for a model without an audio encoder is a clear error.
  r = Cli("generate --model " + Model() + " --audio " + clip + " --prompt hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no audio encoder"), std::string::npos) << r.err;
}

// `make-demo-model --audio tiny` writes a model directory that serves audio: the clip's rows
// really enter the sequence (the logits depend on the clip).
TEST_F(CliTest, RandomSpeechModelTakesClips) {
  const std::string dir = (*dir_ / "speech").string();
  CliRun r = Cli("make-demo-model --audio tiny --seed 5 --out " + dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const fs::path files = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "audio" / "files";
  auto logits_after = [&](const std::string& clip) {
    const std::string out = (*dir_ / "speech_logits.bin").string();
    CliRun l = Cli("logits --model " + dir + " --audio " + (files / clip).string() +
                   " --tokens \"23 5585\" --out " + out);
    EXPECT_EQ(l.code, 0) << l.err;
    std::ifstream lf(out, std::ios::binary);
    std::vector<float> v(65536);
    lf.read(reinterpret_cast<char*>(v.data()), 65536 * 4);
    return v;
  };
  const std::vector<float> a = logits_after("speech_16k_mono.flac");
  const std::vector<float> b = logits_after("speech_44k_stereo.mp3");
  EXPECT_NE(a, b);
  EXPECT_EQ(a, logits_after("speech_16k_mono.flac"));  // deterministic
  r = Cli("generate --model " + dir + " --audio " + (files / "speech_16k_mono.flac").string() +
          " --max-tokens 3");
  EXPECT_EQ(r.code, 0) << r.err;
}

// `forecast` prints the trained demo's forecast of a held-out series as CSV in the input's
// layout, the numbers PyTorch computes (tests/golden/ts_demo/torch_mse.json), and the random
// golden model's forecast with a timestamp column continued as the reference's CSV has it.
TEST_F(CliTest, ForecastPrintsTheModelsForecastAsCsv) {
  const fs::path demo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "ts-demo";
  const fs::path golden = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "ts_demo";
  std::ifstream in(golden / "torch_mse.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  for (const char* name : {"airline", "sunspots"}) {
    const nlohmann::json& s = ref["series"][name];
    CliRun r = Cli("forecast --model " + demo.string() + " --csv " +
                   (golden / s["input"].get<std::string>()).string());
    ASSERT_EQ(r.code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string line;
    std::getline(lines, line);
    EXPECT_EQ(line, name);  // the header, as in the input
    const std::vector<float> want = s["forecast_model"].get<std::vector<float>>();
    for (size_t h = 0; h < want.size(); ++h) {
      ASSERT_TRUE(std::getline(lines, line)) << h;
      EXPECT_NEAR(std::stod(line), want[h], 1e-5 * std::abs(want[h]) + 1e-4) << name << " " << h;
    }
    EXPECT_FALSE(std::getline(lines, line)) << line;
  }
  // Longer than the model's horizon: rolled out; the first 12 steps are the same.
  CliRun r = Cli("forecast --model " + demo.string() + " --horizon 20 --csv " +
                 (golden / "heldout" / "airline_input.csv").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 21);
  // Two channels (the golden fixture, random weights): the reference's forecast CSV, header and
  // all, within float32 rounding.
  const fs::path ts = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "timeseries";
  r = Cli("forecast --model " + ts.string() + " --dtype f32 --csv " +
          (ts / "t45_input.csv").string());
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream want_csv(ts / "t45_forecast.csv");
  const std::string want((std::istreambuf_iterator<char>(want_csv)), {});
  std::istringstream got_lines(r.out), want_lines(want);
  std::string got_line, want_line;
  std::getline(got_lines, got_line);
  std::getline(want_lines, want_line);
  EXPECT_EQ(got_line, want_line);  // header
  int rows = 0;
  while (std::getline(want_lines, want_line)) {
    ASSERT_TRUE(std::getline(got_lines, got_line));
    const size_t gc = got_line.find(','), wc = want_line.find(',');
    ASSERT_NE(gc, std::string::npos);
    for (auto [g, w] :
         {std::pair{std::stod(got_line.substr(0, gc)), std::stod(want_line.substr(0, wc))},
          std::pair{std::stod(got_line.substr(gc + 1)), std::stod(want_line.substr(wc + 1))}}) {
      EXPECT_NEAR(g, w, 1e-4 * std::abs(w)) << "row " << rows;
    }
    ++rows;
  }
  EXPECT_EQ(rows, 6);
  // Errors: a text model, a bad CSV, a series of the wrong width.
  const fs::path bad = *dir_ / "bad.csv";
  std::ofstream(bad) << "a,b\n1,2\n3\n";
  r = Cli("forecast --model " + demo.string() + " --csv " + bad.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
  std::ofstream(bad) << "a,b\n1,2\n3,4\n5,6\n7,8\n";
  r = Cli("forecast --model " + demo.string() + " --csv " + bad.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("2 channels"), std::string::npos) << r.err;
  r = Cli("forecast --model " + Model() + " --csv " + bad.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not a time-series model"), std::string::npos) << r.err;
}

TEST_F(CliTest, GenerateIsReproducibleWithASeedAndHonoursMaxTokens) {
  const std::string args =
      "generate --model " + Model() + " --prompt Hello --max-tokens 12 --seed 7";
  CliRun a = Cli(args), b = Cli(args);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  CliRun c = Cli("generate --model " + Model() + " --prompt Hello --max-tokens 12 --seed 8");
  EXPECT_NE(a.out, c.out);
  // A stop token outside the vocabulary is refused before any work.
  CliRun g = Cli("generate --model " + Model() +
                 " --prompt Hello --max-tokens 3 --temperature 0 "
                 "--presence-penalty 0 --frequency-penalty 0 --stop-token 999999");
  EXPECT_EQ(g.code, 2);
  EXPECT_NE(g.err.find("stop_token_ids"), std::string::npos) << g.err;
}

// The official package's greedy tokens from a state-tuning file on this demo model
// (tests/golden/rwkv7/initial_state/demo_seed3, tools/golden/gen_initial_state_fixtures.py).
TEST_F(CliTest, GenerateStartsFromATrainedInitialState) {
  const std::string fixture = std::string(MODRWKV_GOLDEN_DIR) + "/rwkv7/initial_state/demo_seed3";
  std::ifstream f(fixture + "/manifest.json");
  ASSERT_TRUE(f.good());
  const nlohmann::json m = nlohmann::json::parse(f);
  std::string ids;
  for (int id : m["greedy_ids"].get<std::vector<int>>())
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  CliRun want = Cli("detokenize --tokens " + ids);
  ASSERT_EQ(want.code, 0) << want.err;
  const std::string args = "generate --model " + Model() +
                           " --prompt 'User: hi\n\nAssistant:' --temperature 0 "
                           "--presence-penalty 0 --frequency-penalty 0 --stop-token 65535 "
                           "--max-tokens " +
                           std::to_string(m["greedy_ids"].size());
  CliRun from_state = Cli(args + " --initial-state " + fixture + "/time_state.pth");
  ASSERT_EQ(from_state.code, 0) << from_state.err;
  EXPECT_EQ(from_state.out, want.out + "\n");  // generate ends its output with a newline
  CliRun zero = Cli(args + " --initial-state none");
  ASSERT_EQ(zero.code, 0) << zero.err;
  EXPECT_NE(zero.out, want.out);
  // A model checkpoint is not a state file.
  CliRun bad = Cli(args + " --initial-state " + Model());
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("not a state file"), std::string::npos) << bad.err;
}

TEST_F(CliTest, GenerateFollowsAJsonSchema) {
  const fs::path schema = *dir_ / "schema.json";
  std::ofstream(schema) << R"({"type": "object", "properties": {
      "shape": {"enum": ["circle", "square"]}, "n": {"type": "integer"},
      "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2}},
      "required": ["shape", "n"]})";
  for (const char* sampling : {"--temperature 0", "--temperature 1 --seed 5"}) {
    CliRun r = Cli("generate --model " + Model() + " --prompt Hello --max-tokens 300 " + sampling +
                   " --json-schema " + schema.string());
    ASSERT_EQ(r.code, 0) << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << r.out;
    EXPECT_TRUE(j["shape"] == "circle" || j["shape"] == "square") << r.out;
    EXPECT_TRUE(j["n"].is_number_integer()) << r.out;
  }
  // A keyword the server does not enforce is a usage error naming it.
  std::ofstream(schema) << R"({"type": "string", "pattern": "^a"})";
  CliRun bad =
      Cli("generate --model " + Model() + " --prompt Hello --json-schema " + schema.string());
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("json-schema.pattern"), std::string::npos) << bad.err;
}

TEST_F(CliTest, StopStringEndsGenerationBeforeTheString) {
  // Find what greedy generation produces, then stop on a piece of it.
  const std::string base = "generate --model " + Model() +
                           " --prompt Hello --temperature 0 --presence-penalty 0 "
                           "--frequency-penalty 0 --stop-token 0";
  CliRun full = Cli(base + " --max-tokens 20");
  ASSERT_EQ(full.code, 0) << full.err;
  ASSERT_GT(full.out.size(), 8u);
  const std::string text = full.out.substr(0, full.out.size() - 1);  // trailing newline
  const std::string stop = text.substr(text.size() / 2, 3);
  const size_t at = text.find(stop);
  const std::string esc = "'" + stop + "'";
  if (stop.find('\'') != std::string::npos) GTEST_SKIP() << "quote in generated text";
  CliRun cut = Cli(base + " --max-tokens 20 --stop " + esc);
  ASSERT_EQ(cut.code, 0) << cut.err;
  EXPECT_EQ(cut.out, text.substr(0, at) + "\n");
}

TEST_F(CliTest, EverySubcommandHasHelpAndRejectsUnknownFlags) {
  for (const char* cmd : {"generate", "tokenize", "detokenize", "logits", "forecast", "info",
                          "bench", "make-demo-model"}) {
    CliRun h = Cli(std::string(cmd) + " --help");
    EXPECT_EQ(h.code, 0) << cmd;
    EXPECT_NE(h.out.find(std::string("usage: modrwkv ") + cmd), std::string::npos) << cmd;
    CliRun bad = Cli(std::string(cmd) + " --no-such-flag 1");
    EXPECT_EQ(bad.code, 2) << cmd;
    EXPECT_NE(bad.err.find("unknown flag --no-such-flag"), std::string::npos) << bad.err;
  }
  CliRun none = Cli("");
  EXPECT_EQ(none.code, 2);
  CliRun unknown = Cli("frobnicate");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST_F(CliTest, BadModelFilesAreClearErrors) {
  const fs::path junk = *dir_ / "junk.pth";
  std::ofstream(junk) << "this is not a checkpoint";
  CliRun r = Cli("info --model " + junk.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error:"), std::string::npos);
  r = Cli("info --model " + (*dir_ / "missing.pth").string());
  EXPECT_EQ(r.code, 1);
  r = Cli("generate --model " + Model() + " --prompt hi --top-p 1.5");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--top-p"), std::string::npos) << r.err;
  r = Cli("generate --model " + Model());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("give --prompt or --question"), std::string::npos) << r.err;
}

// --device picks the backend: a malformed one is a usage error naming the flag; a GPU that is
// not there (or a build without the CUDA backend) is a clear error, not a crash.
TEST_F(CliTest, DeviceFlagNamesTheBackend) {
  CliRun r = Cli("generate --model " + Model() + " --prompt hi --max-tokens 2 --device gpu");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--device must be cpu, cuda or cuda:N"), std::string::npos) << r.err;
  r = Cli("generate --model " + Model() + " --prompt hi --max-tokens 2 --device cpu");
  EXPECT_EQ(r.code, 0) << r.err;
  r = Cli("generate --model " + Model() + " --prompt hi --max-tokens 2 --device cuda:63");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(r.err.find("CUDA device(s) are visible") != std::string::npos ||
              r.err.find("no CUDA backend") != std::string::npos)
      << r.err;
}

// Damaged or unsafe checkpoints that used to load (wrong tensors, or a pickle naming os.system)
// are refused with the reason; --no-verify-checksums skips only the CRC pass.
TEST_F(CliTest, CorruptCheckpointsAreRefusedWithTheReason) {
  std::ifstream in(Model(), std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(good.size(), 1000u);
  auto write = [&](const std::string& name, const std::string& bytes) {
    const fs::path p = *dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  };

  // One flipped bit inside the embedding's bytes: only the CRC-32 sees it.
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x04;
  const std::string crc = write("crc.pth", flipped);
  CliRun r = Cli("info --model " + crc);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(crc), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(": CRC-32 mismatch, expected 0x"), std::string::npos) << r.err;
  r = Cli("info --model " + crc + " --no-verify-checksums");
  EXPECT_EQ(r.code, 0) << r.err;
  r = Cli("info --model " + crc + " --no-verify-checksums --verify-checksums");  // last one wins
  EXPECT_EQ(r.code, 1);

  // The first local header names another entry than the central directory does.
  std::string renamed = good;
  ASSERT_EQ(renamed.substr(30, 16), "archive/data.pkl");
  renamed[30 + 8] = 'D';
  r = Cli("info --model " + write("local.pth", renamed) + " --no-verify-checksums");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("local header of archive/data.pkl disagrees with the central directory: "
                       "name is \"archive/Data.pkl\""),
            std::string::npos)
      << r.err;

  // A state dict whose one (unused) value would call os.system("true").
  const std::string pkl = (*dir_ / "global.pth").string();
  {
    auto f = modrwkv::AtomicFile::Create(pkl);
    ASSERT_TRUE(f.ok()) << f.status();
    modrwkv::ZipWriter zip(f->get());
    using namespace std::string_literals;
    ASSERT_TRUE(
        zip.AddStored("archive/data.pkl", "\x80\x02}X\x01\0\0\0xcos\nsystem\n(X\x04\0\0\0truetRs."s)
            .ok());
    ASSERT_TRUE(zip.AddStored("archive/version", "3\n").ok());
    ASSERT_TRUE(zip.Finish().ok());
    ASSERT_TRUE((*f)->Commit().ok());
  }
  r = Cli("info --model " + pkl);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("global os.system (module \"os\", name \"system\") is not allowed"),
            std::string::npos)
      << r.err;

  // Bytes after the last tensor of a .safetensors file.
  std::ifstream st_in(*dir_ / "st" / "model.safetensors", std::ios::binary);
  const std::string st((std::istreambuf_iterator<char>(st_in)), {});
  r = Cli("info --model " + write("tail.safetensors", st + "hidden"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("data_offsets leave bytes"), std::string::npos) << r.err;
}

TEST_F(CliTest, BenchRunsOnTinyShape) {
  CliRun r =
      Cli("bench --shape tiny --dtype f32,int4 --threads 1 --prompt-len 16 --decode-steps 2 "
          "--batches 1,2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("| tiny | f32 | 1 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| tiny | int4 | 1 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OpenBLAS core"), std::string::npos);
  // The integer products' peak and our int4 product are measured wherever they are SIMD.
  const size_t at = r.out.find("integer products' peak ");
  ASSERT_NE(at, std::string::npos) << r.out;
  double peak = -1, ours = -1;
  ASSERT_EQ(std::sscanf(r.out.c_str() + at,
                        "integer products' peak %lf GOP/s, our int4 product "
                        "2048^3 %lf GOP/s",
                        &peak, &ours),
            2)
      << r.out.substr(at);
  EXPECT_GT(ours, 0);
  if (r.out.find("kernels scalar") == std::string::npos) {
    EXPECT_GT(peak, ours) << "an instruction loop outruns any product made of it";
  } else {
    EXPECT_EQ(peak, 0);
  }
}

}  // namespace
