// Images end to end through the real server with the trained vision demo model
// (assets/vision-demo, tools/train/): answers on held-out images, chat turns with images, the
// errors a client can cause, GetModelInfo and the encoder metrics.
#include "tests/e2e/e2e_util.h"

namespace modrwkv::e2e {
namespace {

const fs::path kDemo = fs::path(MODRWKV_SOURCE_DIR) / "assets" / "vision-demo";
const fs::path kHeldOut = fs::path(MODRWKV_SOURCE_DIR) / "tests" / "golden" / "vision_demo";

struct Example {
  std::string file, question, answer;
};

std::vector<Example> HeldOut() {  // answers.tsv: file, question, answer
  std::vector<Example> out;
  for (const auto& cols : ReadTsv(kHeldOut / "heldout" / "answers.tsv")) {
    if (cols.size() >= 3) out.push_back({cols[0], cols[1], cols[2]});
  }
  return out;
}

// The chat template of the demo model, applied by hand for Generate (raw parts).
pb::GenerateRequest Ask(const std::string& image, const std::string& question) {
  pb::GenerateRequest req;
  req.add_input()->mutable_image()->set_data(image);
  req.add_input()->set_text("\x16User: " + question + "\x17\x16" + "Assistant:");
  req.mutable_sampling()->set_temperature(0.0f);
  req.mutable_stop()->set_max_tokens(24);
  req.mutable_stop()->add_stop_token_ids(24);
  return req;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\x17' || s.back() == '\n')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

ServerProcess::Options DemoOptions(std::vector<std::string> args = {}) {
  ServerProcess::Options o;
  o.model = kDemo;
  o.args = std::move(args);
  return o;
}

// The demo served with `args`: its accuracy on the held-out questions (each answer whole), the
// misses' first lines, and the weight type the server reports.
double HeldOutAccuracy(std::vector<std::string> args, std::string* misses,
                       std::string* weight_dtype = nullptr) {
  const std::vector<Example> examples = HeldOut();
  EXPECT_GE(examples.size(), 100u);
  auto server = ServerProcess::Start(DemoOptions(std::move(args)));
  EXPECT_NE(server, nullptr);
  if (server == nullptr) return 0;
  auto stub = pb::Inference::NewStub(server->Channel());
  if (weight_dtype != nullptr) {
    grpc::ClientContext ctx;
    pb::ModelInfo info;
    EXPECT_TRUE(stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info).ok());
    *weight_dtype = info.weight_dtype();
  }
  int correct = 0;
  for (const Example& ex : examples) {
    StreamResult r =
        RunGenerate(stub.get(), Ask(ReadAll(kHeldOut / "heldout" / ex.file), ex.question));
    EXPECT_TRUE(r.status.ok()) << ex.file << ": " << r.status.error_message();
    if (!r.result.has_value()) continue;
    EXPECT_GT(r.result->usage().image_rows(), 0);
    if (Trim(r.text) == ex.answer) {
      ++correct;
    } else if (misses->size() < 2000) {
      *misses += ex.file + ": '" + Trim(r.text) + "' expected '" + ex.answer + "'\n";
    }
  }
  return static_cast<double>(correct) / examples.size();
}

TEST(VisionE2eTest, TheDemoModelAnswersHeldOutQuestionsAboutImages) {
  std::string misses;
  const double accuracy = HeldOutAccuracy({"--encoder-workers", "2"}, &misses);
  const std::string torch_json = ReadAll(kHeldOut / "torch_accuracy.json");
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(torch_json, m, std::regex("\"accuracy_bf16_weights\"\\s*:\\s*([0-9.]+)")))
      << torch_json;
  const double torch_accuracy = std::stod(m[1]);
  std::printf("held-out accuracy: server %.3f, PyTorch %.3f\n", accuracy, torch_accuracy);
  EXPECT_GE(accuracy, 0.95) << misses;
  // The C++ path and the training code agree on trained weights, not just on random ones.
  EXPECT_NEAR(accuracy, torch_accuracy, 0.03) << misses;
}

// The same questions with the language model's large projections in 4 bits (--dtype int4): the
// trained model still sees what is in the pictures.
TEST(VisionE2eTest, TheDemoModelInInt4AnswersHeldOutQuestions) {
  std::string misses, dtype;
  const double accuracy =
      HeldOutAccuracy({"--encoder-workers", "2", "--dtype", "int4"}, &misses, &dtype);
  EXPECT_EQ(dtype, "int4");
  std::printf("held-out accuracy, int4 weights: %.3f\n", accuracy);
  EXPECT_GE(accuracy, 0.95) << misses;
}

// The demo's state-tuned initial state (assets/vision-demo/states/detailed.pth, trained by
// tools/train/train_vision_state.py with every weight frozen): from it, the shape question is
// answered with the shape and the position; from the zero state, with the shape alone.
TEST(VisionE2eTest, ATunedInitialStateAddsThePositionToTheShapeAnswer) {
  std::map<std::string, std::map<std::string, std::string>> answers;  // file -> question -> answer
  for (const Example& ex : HeldOut()) answers[ex.file][ex.question] = ex.answer;
  auto server = ServerProcess::Start(
      DemoOptions({"--initial-state", "detailed=" + (kDemo / "states" / "detailed.pth").string()}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  int asked = 0;
  for (const auto& [file, by_question] : answers) {
    if (asked == 30) break;
    const auto shape = by_question.find("What shape is in the picture?");
    const auto where = by_question.find("Where is the shape?");
    if (shape == by_question.end() || where == by_question.end()) continue;
    ++asked;
    const std::string image = ReadAll(kHeldOut / "heldout" / file);
    pb::GenerateRequest req = Ask(image, shape->first);
    req.set_initial_state("detailed");
    StreamResult tuned = RunGenerate(stub.get(), req);
    ASSERT_TRUE(tuned.status.ok()) << file << ": " << tuned.status.error_message();
    EXPECT_EQ(Trim(tuned.text), shape->second + " " + where->second) << file;
    StreamResult plain = RunGenerate(stub.get(), Ask(image, shape->first));
    ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
    EXPECT_EQ(Trim(plain.text), shape->second) << file;
    // The state changes that one behaviour: the other questions keep their answers.
    pb::GenerateRequest colour = Ask(image, "What color is the shape?");
    colour.set_initial_state("detailed");
    StreamResult c = RunGenerate(stub.get(), colour);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(Trim(c.text), by_question.at("What color is the shape?")) << file;
  }
  EXPECT_EQ(asked, 30);
}

TEST(VisionE2eTest, ChatTurnsCarryImagesAndLaterTurnsContinueWithoutThem) {
  const std::vector<Example> examples = HeldOut();
  ASSERT_FALSE(examples.empty());
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Chat(&ctx);
  pb::ChatRequest first;
  first.set_text(examples[0].question);
  first.add_images()->set_data(ReadAll(kHeldOut / "heldout" / examples[0].file));
  first.mutable_sampling()->set_temperature(0.0f);
  first.mutable_stop()->set_max_tokens(24);
  ASSERT_TRUE(stream->Write(first));
  std::string text;
  pb::ChatResponse resp;
  std::optional<pb::TurnEnd> end;
  while (!end && stream->Read(&resp)) {
    if (resp.has_chunk()) text += resp.chunk().text();
    if (resp.has_turn_end()) end = resp.turn_end();
  }
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->finish_reason(), pb::FINISH_REASON_STOP);
  EXPECT_GT(end->usage().image_rows(), 0);
  EXPECT_GT(end->usage().prompt_tokens(), end->usage().image_rows());
  // The chat template puts the image where the model was trained to see it: same answer as the
  // Generate path.
  EXPECT_EQ(Trim(text), examples[0].answer);
  pb::ChatRequest second;
  second.set_text("Thanks.");
  second.mutable_sampling()->set_temperature(0.0f);
  second.mutable_stop()->set_max_tokens(8);
  ASSERT_TRUE(stream->Write(second));
  end.reset();
  while (!end && stream->Read(&resp)) {
    if (resp.has_turn_end()) end = resp.turn_end();
  }
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->usage().image_rows(), 0);
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(VisionE2eTest, BadImagesAreRefusedNamingThePartAndTheLimit) {
  auto server = ServerProcess::Start(
      DemoOptions({"--max-image-pixels", "1000000", "--max-images-per-request", "2"}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  const std::string good = ReadAll(kHeldOut / "heldout" / HeldOut().at(0).file);
  {  // not an image
    pb::GenerateRequest req = Ask("this is not an image at all", "What shape is in the picture?");
    StreamResult r = RunGenerate(stub.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(r.status), "input[0].image") << r.status.error_message();
  }
  {  // truncated
    StreamResult r =
        RunGenerate(stub.get(), Ask(good.substr(0, good.size() / 2), "What shape is it?"));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << r.status.error_message();
  }
  {  // a PNG header that claims 20000 x 20000 pixels: refused from the header alone
    std::string png = "\x89PNG\r\n\x1a\n";
    png += std::string("\0\0\0\x0dIHDR", 8);
    png += std::string("\0\0\x4e\x20\0\0\x4e\x20\x08\x02\0\0\0", 13);
    png += std::string("\0\0\0\0", 4);  // CRC (wrong on purpose; the size check comes first)
    StreamResult r = RunGenerate(stub.get(), Ask(png, "What shape is it?"));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(r.status), "input[0].image") << r.status.error_message();
  }
  {  // too many images
    pb::GenerateRequest req = Ask(good, "What shape is it?");
    for (int i = 0; i < 2; ++i) req.add_input()->mutable_image()->set_data(good);
    StreamResult r = RunGenerate(stub.get(), req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.status.error_message().find("max-images-per-request"), std::string::npos)
        << r.status.error_message();
  }
  {  // a chat turn's image is named by its own field
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = stub->Chat(&ctx);
    pb::ChatRequest turn;
    turn.set_text("What shape is in the picture?");
    turn.add_images()->set_data("GIF89a garbage");
    stream->Write(turn);
    stream->WritesDone();
    pb::ChatResponse resp;
    while (stream->Read(&resp)) {
    }
    grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(BadFieldOf(st), "images[0]") << st.error_message();
  }
  // The server is still fine.
  StreamResult ok = RunGenerate(stub.get(), Ask(good, HeldOut().at(0).question));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

// More images than the encoder queue can ever hold: refused before anything is decoded (a busy
// queue's RESOURCE_EXHAUSTED is tested in tests/server/media_requests_test.cc).
TEST(VisionE2eTest, MoreImagesThanTheEncoderQueueHoldsAreRefused) {
  auto server = ServerProcess::Start(DemoOptions({"--encoder-queue-items", "1"}));
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  const std::vector<Example> examples = HeldOut();
  pb::GenerateRequest req = Ask(ReadAll(kHeldOut / "heldout" / examples.at(0).file), "Which?");
  req.add_input()->mutable_image()->set_data(ReadAll(kHeldOut / "heldout" / examples.at(1).file));
  StreamResult r = RunGenerate(stub.get(), req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("encoder-queue-items"), std::string::npos)
      << r.status.error_message();
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_items_total"), 0);
  // One image fits.
  StreamResult ok = RunGenerate(stub.get(), Ask(ReadAll(kHeldOut / "heldout" / examples.at(0).file),
                                                examples.at(0).question));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(Trim(ok.text), examples.at(0).answer);
}

TEST(VisionE2eTest, ModelInfoListsImagesAndTheEncoderIsMeasured) {
  auto server = ServerProcess::Start(DemoOptions());
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  grpc::ClientContext ctx;
  pb::GetModelInfoRequest req;
  pb::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, req, &info).ok());
  bool image = false;
  for (int m : info.modalities()) image |= m == pb::MODALITY_IMAGE;
  EXPECT_TRUE(image);
  EXPECT_GT(info.limits().image_rows(), 0);
  EXPECT_GT(info.limits().max_image_pixels(), 0);
  EXPECT_EQ(info.limits().max_images_per_request(), 4);
  const Example ex = HeldOut().at(1);
  const std::string bytes = ReadAll(kHeldOut / "heldout" / ex.file);
  for (int i = 0; i < 2; ++i) {  // the second time from the encoder-output cache
    StreamResult r = RunGenerate(stub.get(), Ask(bytes, ex.question));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(Trim(r.text), ex.answer);
    if (i == 0) {  // the time to first token the client sees includes the encoding
      ASSERT_TRUE(r.result.has_value());
      const auto& ttft = r.result->usage().time_to_first_token();
      EXPECT_GE(ttft.seconds() + ttft.nanos() * 1e-9,
                ScrapeMetric(*server, "modrwkv_encoder_batch_seconds_sum"));
    }
  }
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_cache_lookups_total{result=\"hit\"}"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_cache_lookups_total{result=\"miss\"}"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_encoder_batch_seconds_count"), 1);
  EXPECT_EQ(ScrapeMetric(*server, "modrwkv_image_rows_per_request_count"), 2);
}

TEST(VisionE2eTest, ATextModelRefusesImagesAsUnimplemented) {
  ServerProcess::Options o;  // the random-weight text demo model
  auto server = ServerProcess::Start(o);
  ASSERT_NE(server, nullptr);
  auto stub = pb::Inference::NewStub(server->Channel());
  StreamResult r = RunGenerate(stub.get(), Ask("\x89PNG", "What is it?"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(ErrorInfoOf(r.status)->reason(), "MODALITY_NOT_SERVED");
}

}  // namespace
}  // namespace modrwkv::e2e
