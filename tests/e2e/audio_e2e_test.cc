// Audio end to end through the real server with the trained speech demo model
// (assets/audio-demo, tools/train/): transcripts of held-out clips (word error rate against
// PyTorch's), the shipped example files in four container formats, chat turns with clips, the
// errors a client can cause, GetModelInfo and the audio metrics.
#include <cstdint>

#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

const fs::path kDemo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "audio-demo";
const fs::path kHeldOut = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "audio_demo";

struct Clip {
  std::string file, transcript;
};

std::vector<Clip> HeldOut() {  // transcripts.tsv: file, transcript
  std::vector<Clip> out;
  for (const auto& cols : ReadTsv(kHeldOut / "heldout" / "transcripts.tsv")) {
    if (cols.size() >= 2) out.push_back({cols[0], cols[1]});
  }
  return out;
}

// The demo model's prompt, as it was trained: the clip's rows, then "\x16Assistant:"; greedy,
// stop at the turn end (24), as the manifest says for chat turns (Generate is raw).
pb::GenerateRequest Transcribe(const std::string& audio) {
  pb::GenerateRequest req;
  req.add_input()->mutable_audio()->set_data(audio);
  req.add_input()->set_text(
      "\x16"
      "Assistant:");
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_sampling()->add_banned_token_ids(0);
  req.mutable_stop()->set_max_tokens(24);
  req.mutable_stop()->add_stop_token_ids(24);
  return req;
}

std::vector<std::string> Words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// Word-level Levenshtein distance.
int WordErrors(const std::vector<std::string>& ref, const std::vector<std::string>& hyp) {
  std::vector<int> row(hyp.size() + 1);
  for (size_t j = 0; j <= hyp.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= ref.size(); ++i) {
    int diag = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= hyp.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (ref[i - 1] == hyp[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[hyp.size()];
}

// Transcript as the training script scores it: words separated by single spaces.
std::string Normalize(const std::string& s) {
  std::string out;
  for (const std::string& w : Words(s)) out += (out.empty() ? "" : " ") + w;
  return out;
}

// A 16-bit PCM mono WAV file of `seconds` of a quiet 440 Hz tone.
std::string ToneWav(double seconds, int rate = 16000) {
  const uint32_t n = static_cast<uint32_t>(seconds * rate);
  std::string w;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) w.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto u16 = [&](uint16_t v) {
    w.push_back(static_cast<char>(v & 0xff));
    w.push_back(static_cast<char>(v >> 8));
  };
  w += "RIFF";
  u32(36 + 2 * n);
  w += "WAVEfmt ";
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(rate);
  u32(2 * rate);
  u16(2);
  u16(16);
  w += "data";
  u32(2 * n);
  for (uint32_t i = 0; i < n; ++i) {
    u16(static_cast<uint16_t>(static_cast<int16_t>(3000 * std::sin(2 * M_PI * 440.0 * i / rate))));
  }
  return w;
}

ServerProcess::Options DemoOptions(std::vector<std::string> args = {}) {
  ServerProcess::Options o;
  o.model = kDemo;
  o.args = std::move(args);
  return o;
}

// The demo served with `args`: its word error rate on the held-out clips, the misses' first
// lines, and the weight type the server reports.
double HeldOutWer(std::vector<std::string> args, std::string* misses, std::string* weight_dtype) {
  const std::vector<Clip> clips = HeldOut();
  EXPECT_GE(clips.size(), 100u);
  auto server = ServerProcess::Start(DemoOptions(std::move(args)));
  EXPECT_NE(server, nullptr);
  if (server == nullptr) return 1;
  auto stub = pb::Inference::NewStub(server->Channel());
  grpc::ClientContext ctx;
  pb::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
  *weight_dtype = info.weight_dtype();
  int errors = 0, words = 0;
  for (const Clip& c : clips) {
    StreamResult r = RunGenerate(stub.get(), Transcribe(ReadAll(kHeldOut / "heldout" / c.file)));
    EXPECT_TRUE(r.status.ok()) << c.file << ": " << r.status.error_message();
    if (!r.result.has_value()) return 1;
    EXPECT_GT(r.result->usage().audio_rows(), 0);
    EXPECT_EQ(r.result->usage().image_rows(), 0);
    const std::vector<std::string> ref = Words(c.transcript);
    const int e = WordErrors(ref, Words(r.text));
    errors += e;
    words += static_cast<int>(ref.size());
    if (e > 0 && misses->size() < 2000) {
      *misses += c.file + ": '" + Normalize(r.text) + "' expected '" + c.transcript + "'\n";
    }
  }
  return static_cast<double>(errors) / words;
}

TEST(AudioE2eTest, TheDemoModelTranscribesHeldOutClips) {
  std::string misses, dtype;
  const double wer = HeldOutWer({"--encoder-workers", "2"}, &misses, &dtype);
  EXPECT_EQ(dtype, "bf16");
  const std::string torch_json = ReadAll(kHeldOut / "torch_wer.json");
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(torch_json, m, std::regex("\"wer_bf16_weights\"\\s*:\\s*([0-9.]+)")))
      << torch_json;
  const double torch_wer = std::stod(m[1]);
  std::printf("held-out WER: server %.4f, PyTorch %.4f\n", wer, torch_wer);
  EXPECT_LE(wer, 0.10) << misses;
  // The C++ path (FFmpeg, log-mel, encoder, adapter, engine) and the training code agree on
  // trained weights.
  EXPECT_NEAR(wer, torch_wer, 0.02) << misses;
}

// The same clips with the language model's large projections in 4 bits (--dtype int4): the
// trained model still hears the words.
TEST(AudioE2eTest, TheDemoModelInInt4TranscribesHeldOutClips) {
  std::string misses, dtype;
  const double wer = HeldOutWer({"--encoder-workers", "2", "--dtype", "int4"}, &misses, &dtype);
  EXPECT_EQ(dtype, "int4");
  std::printf("held-out WER, int4 weights: %.4f\n", wer);
  EXPECT_LE(wer, 0.10) << misses;
}

TEST(AudioE2eTest, TheShippedExamplesDecodeInEveryContainer) {
  // examples/README.md: "| file | spoken | model output |" rows written by the training script.
  const std::string readme = ReadAll(kDemo / "examples" / "README.md");
  const std::regex row("\\| ([a-z_]+\\.(wav|flac|mp3|ogg)) \\| ([a-z ]+) \\| ([a-z ]*) \\|");
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  int seen = 0;
  for (std::sregex_iterator it(readme.begin(), readme.end(), row), end; it != end; ++it) {
    const std::string file = (*it)[1], expected = (*it)[4];
    StreamResult r = RunGenerate(stub.get(), Transcribe(ReadAll(kDemo / "examples" / file)));
    ASSERT_TRUE(r.status.ok()) << file << ": " << r.status.error_message();
    EXPECT_EQ(Normalize(r.text), Normalize(expected)) << file;
    ++seen;
  }
  EXPECT_EQ(seen, 4) << readme;
}

TEST(AudioE2eTest, ChatTurnsCarryClipsAndCountTheirRows) {
  const std::vector<Clip> clips = HeldOut();
  ASSERT_FALSE(clips.empty());
  const std::string bytes = ReadAll(kHeldOut / "heldout" / clips[0].file);
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  StreamResult alone = RunGenerate(stub.get(), Transcribe(bytes));
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  ASSERT_TRUE(alone.result.has_value());

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Chat(&ctx);
  auto turn = [&](pb::ChatRequest req) {
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_stop()->set_max_tokens(8);
    EXPECT_TRUE(stream->Write(req));
    pb::ChatResponse resp;
    std::optional<pb::TurnEnd> end;
    while (!end && stream->Read(&resp)) {
      if (resp.has_turn_end()) end = resp.turn_end();
    }
    return end;
  };
  pb::ChatRequest first;
  first.set_text("What was said?");
  first.add_audio()->set_data(bytes);
  std::optional<pb::TurnEnd> end = turn(first);
  ASSERT_TRUE(end.has_value());
  // The same clip gives the same rows whether it comes through Generate or Chat.
  EXPECT_EQ(end->usage().audio_rows(), alone.result->usage().audio_rows());
  EXPECT_GT(end->usage().prompt_tokens(), end->usage().audio_rows());
  pb::ChatRequest second;
  second.set_text("Thanks.");
  end = turn(second);
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->usage().audio_rows(), 0);
  stream->WritesDone();
  pb::ChatResponse resp;
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(AudioE2eTest, BadClipsAreRefusedNamingThePartAndTheLimit) {
  auto server =
      ServerProcess::Start(DemoOptions({"--max-audio-seconds", "10", "--max-audio-per-request", "2",
                                        "--max-audio-bytes", "2000000"}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  const Clip known = HeldOut().at(1);  // one the model transcribes right (clip_000 it does not)
  const std::string good = ReadAll(kHeldOut / "heldout" / known.file);
  {  // not audio
    StreamResult r = RunGenerate(stub.get(), Transcribe("this is not an audio file at all"));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(r.status), "input[0].audio") << r.status.error_message();
  }
  {  // truncated FLAC
    StreamResult r = RunGenerate(stub.get(), Transcribe(good.substr(0, 40)));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.status.error_message();
  }
  {  // longer than --max-audio-seconds: refused, not cut
    StreamResult r = RunGenerate(stub.get(), Transcribe(ToneWav(12.0)));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(r.status), "input[0].audio") << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("max-audio-seconds"), std::string::npos)
        << r.status.error_message();
  }
  {  // more bytes than --max-audio-bytes: refused before decoding
    StreamResult r = RunGenerate(stub.get(), Transcribe(std::string(2000001, 'x')));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("max-audio-bytes"), std::string::npos)
        << r.status.error_message();
  }
  {  // too many clips
    pb::GenerateRequest req = Transcribe(good);
    for (int i = 0; i < 2; ++i) req.add_input()->mutable_audio()->set_data(good);
    StreamResult r = RunGenerate(stub.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("max-audio-per-request"), std::string::npos)
        << r.status.error_message();
  }
  {  // a chat turn's clip is named by its own field
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = stub->Chat(&ctx);
    pb::ChatRequest turn;
    turn.set_text("What was said?");
    turn.add_audio()->set_data("RIFF garbage");
    stream->Write(turn);
    stream->WritesDone();
    pb::ChatResponse resp;
    while (stream->Read(&resp)) {
    }
    grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(st), "audio[0]") << st.error_message();
  }
  // The server is still fine.
  StreamResult ok = RunGenerate(stub.get(), Transcribe(good));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(Normalize(ok.text), known.transcript);
}

TEST(AudioE2eTest, ModelInfoListsAudioAndTheRowsAreMeasured) {
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  grpc::ClientContext ctx;
  pb::GetModelInfoRequest req;
  pb::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, req, &info).ok());
  bool audio = false, image = false;
  for (int m : info.modalities()) {
    audio |= m == pb::MODALITY_AUDIO;
    image |= m == pb::MODALITY_IMAGE;
  }
  EXPECT_TRUE(audio);
  EXPECT_FALSE(image);
  EXPECT_EQ(info.limits().max_audio_seconds(), 30);
  EXPECT_EQ(info.limits().max_audio_per_request(), 4);
  EXPECT_GT(info.limits().max_audio_bytes(), 0);
  // Whisper: 100 mel frames per second, 2 per encoder row, 2 encoder rows per adapter row.
  EXPECT_NEAR(info.limits().audio_rows_per_second(), 25.0, 1.0);
  const Clip c = HeldOut().at(2);
  for (int i = 0; i < 2; ++i) {  // the second time from the encoder-output cache
    StreamResult r = RunGenerate(stub.get(), Transcribe(ReadAll(kHeldOut / "heldout" / c.file)));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(Normalize(r.text), c.transcript);
  }
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_cache_lookups_total{result=\"hit\"}"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_audio_rows_per_request_count"), 2);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_image_rows_per_request_count"), 0);
}

TEST(AudioE2eTest, AModelWithoutAnAudioEncoderRefusesClipsAsUnimplemented) {
  ServerProcess::Options o;  // the vision demo: images yes, audio no
  o.model = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "vision-demo";
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  StreamResult r = RunGenerate(stub.get(), Transcribe(ToneWav(1.0)));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(ErrorInfoOf(r.status)->reason(), "MODALITY_NOT_SERVED");
}

}  // namespace
}  // namespace modrwkv::e2e
