// `modrwkv client` against a real server: the terminal client's output and exit codes.
#include "absl/strings/str_cat.h"
#include "tests/e2e/e2e_util.h"
#include "tests/shell_run.h"

namespace modrwkv::e2e {
namespace {

using ClientRun = testing_shell::ShellRun;
using testing_shell::RunShell;

// Runs `sh -c "<stdin_cmd> | modrwkv client <args>"`.
ClientRun Client(const std::string& args, const std::string& stdin_cmd = "true") {
  return RunShell(stdin_cmd + " | " + std::string(MODRWKV_CLI) + " client " + args);
}

class ClientE2eTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = ServerProcess::Start({}).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }
  static std::string Target() { return " --target " + server_->target(); }
  static ServerProcess* server_;
};
ServerProcess* ClientE2eTest::server_ = nullptr;

TEST_F(ClientE2eTest, GenerateStreamsTheSameTextAsTheApi) {
  auto stub = pb::Inference::NewStub(server_->Channel());
  StreamResult api = RunGenerate(stub.get(), Greedy("Hello there", 12));
  ASSERT_TRUE(api.status.ok());
  ClientRun r =
      Client("generate" + Target() +
             " --prompt 'Hello there' --max-tokens 12 --temperature 0 --ignore-eos --usage");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, api.text + "\n");
  EXPECT_NE(r.err.find("FINISH_REASON_LENGTH"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generated 12 tokens"), std::string::npos) << r.err;
}

TEST_F(ClientE2eTest, GeneratePrintsEveryChoice) {
  auto stub = pb::Inference::NewStub(server_->Channel());
  pb::GenerateRequest req = Greedy("Hello there", 10);
  req.mutable_sampling()->set_temperature(1.0f);
  std::string want;
  for (int i = 0; i < 2; ++i) {
    req.mutable_sampling()->set_seed(5 + i);
    StreamResult api = RunGenerate(stub.get(), req);
    ASSERT_TRUE(api.status.ok());
    want += absl::StrCat(i ? "\n" : "", "--- choice ", i, "\n", api.text);
  }
  ClientRun r = Client("generate" + Target() +
                       " --prompt 'Hello there' --max-tokens 10 --temperature 1 --seed 5 --n 2 "
                       "--ignore-eos --usage");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
  int usage_lines = 0;  // one per choice
  for (size_t at = r.err.find("generated 10 tokens"); at != std::string::npos;
       at = r.err.find("generated 10 tokens", at + 1)) {
    ++usage_lines;
  }
  EXPECT_EQ(usage_lines, 2) << r.err;
}

TEST_F(ClientE2eTest, ErrorsShowCodeAndDetailsAndExitOne) {
  ClientRun r = Client("generate" + Target() + " --prompt x --top-p 3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("field sampling.top_p"), std::string::npos) << r.err;
  r = Client("generate --target 127.0.0.1:1 --prompt x --timeout 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;
  r = Client("frobnicate" + Target());
  EXPECT_EQ(r.code, 2);
  // --priority reaches the server: above its cap (--max-request-priority 0) it is refused, below
  // it the request runs; the load generator's requests carry it too.
  r = Client("generate" + Target() + " --prompt x --max-tokens 2 --priority 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("field priority"), std::string::npos) << r.err;
  r = Client("generate" + Target() + " --prompt x --max-tokens 2 --priority -7");
  EXPECT_EQ(r.code, 0) << r.err;
  r = Client("chat" + Target() + " --max-tokens 2 --priority 1", "echo hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("field priority"), std::string::npos) << r.err;
  r = RunShell(std::string(MODRWKV_LOADGEN) + Target() +
               " --prompt-tokens 4 --output-tokens 2 --requests 1 --priority 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("completed 0  failed 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("priority"), std::string::npos) << r.out;
}

TEST_F(ClientE2eTest, TokenizeDetokenizeInfoHealth) {
  ClientRun r = Client("tokenize" + Target() + " --text 'User: hi'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "24281 59 4571\n");
  r = Client("detokenize" + Target() + " --tokens '24281 59 4571'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "User: hi");
  r = Client("info" + Target());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("architecture: \"rwkv7\""), std::string::npos) << r.out;
  r = Client("health" + Target());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
  r = Client("health" + Target() + " --service=");
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(ClientE2eTest, ChatAnswersEachLineAsATurn) {
  ClientRun r = Client("chat" + Target() + " --max-tokens 6 --temperature 0 --usage",
                       "printf 'hello\\nhow are you\\n'");
  ASSERT_EQ(r.code, 0) << r.err;
  // Two turns: two answers (each ended by a newline), two usage lines.
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
  size_t turns = 0;
  for (size_t at = 0; (at = r.err.find("FINISH_REASON_", at)) != std::string::npos; ++at) ++turns;
  EXPECT_EQ(turns, 2u) << r.err;
}

TEST_F(ClientE2eTest, SessionsExportAndImportThroughFiles) {
  ClientRun created = Client("create-session" + Target());
  ASSERT_EQ(created.code, 0) << created.err;
  const std::string id = created.out.substr(0, 32);
  ClientRun g =
      Client("generate" + Target() + " --session " + id + " --prompt 'Note this' --max-tokens 4");
  ASSERT_EQ(g.code, 0) << g.err;
  const fs::path blob = fs::temp_directory_path() / ("e2e_blob_" + std::to_string(getpid()));
  ClientRun ex =
      Client("export-session" + Target() + " --session " + id + " --file " + blob.string());
  ASSERT_EQ(ex.code, 0) << ex.err;
  EXPECT_GT(fs::file_size(blob), 72u);
  ClientRun im = Client("import-session" + Target() + " --file " + blob.string());
  ASSERT_EQ(im.code, 0) << im.err;
  EXPECT_NE(im.out.find("tokens="), std::string::npos) << im.out;
  EXPECT_NE(im.out.substr(0, 32), id);
  ClientRun del = Client("delete-session" + Target() + " --session " + id);
  EXPECT_EQ(del.code, 0) << del.err;
  ClientRun get = Client("get-session" + Target() + " --session " + id);
  EXPECT_EQ(get.code, 1);
  EXPECT_NE(get.err.find("NOT_FOUND"), std::string::npos) << get.err;
  fs::remove(blob);
}

// The load generator against the real server: closed and open loop complete every request and
// report it in text and JSON; refused requests are counted and make it exit 1.
TEST_F(ClientE2eTest, LoadgenCountsEveryRequest) {
  const fs::path json = fs::temp_directory_path() / ("e2e_loadgen_" + std::to_string(getpid()));
  const std::string lg = std::string(MODRWKV_LOADGEN) + " --prompt-tokens 4 --output-tokens 5";
  ClientRun r = RunShell(lg + Target() + " --concurrency 3 --requests 7 --temperature 0 --json " +
                         json.string());
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("completed 7  failed 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("temperature 0"), std::string::npos) << r.out;
  const std::string j = ReadAll(json);
  EXPECT_NE(j.find("\"completed\": 7, \"failed\": 0"), std::string::npos) << j;
  const size_t at = j.find("\"output_tokens_per_s\": ");
  ASSERT_NE(at, std::string::npos) << j;
  EXPECT_GT(std::stod(j.substr(at + 23)), 0.0) << j;
  fs::remove(json);

  r = RunShell(lg + Target() + " --rate 40 --requests 4");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("completed 4  failed 0"), std::string::npos) << r.out;

  // n completions per request, after a prompt prefix shared by all: every choice's tokens count.
  const double generated0 = ScrapeMetric(*server_, "modrwkv_generated_tokens_total");
  r = RunShell(lg + Target() + " --concurrency 1 --requests 3 --n 2 --shared-prefix-tokens 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("completed 3  failed 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prompt 4 tokens (2 shared) | output 5 tokens x 2"), std::string::npos)
      << r.out;
  EXPECT_EQ(ScrapeMetric(*server_, "modrwkv_generated_tokens_total") - generated0, 3 * 2 * 5);
  // Their decode steps, of few sequences, counted the value products' inputs that could be
  // skipped (--sparse-ffn, on by default) and those that were read.
  const double sparse_inputs = ScrapeMetric(*server_, "modrwkv_sparse_ffn_inputs_total");
  EXPECT_GT(sparse_inputs, 0);
  EXPECT_GT(ScrapeMetric(*server_, "modrwkv_sparse_ffn_inputs_read_total"), 0);
  EXPECT_LE(ScrapeMetric(*server_, "modrwkv_sparse_ffn_inputs_read_total"), sparse_inputs);

  // Prompts over a server's admission bound are refused: counted as failed, exit code 1. (Such a
  // server must still warm up and become ready: its warm-up prompts fit the bound.)
  ServerProcess::Options o;
  o.args = {"--max-queued-prompt-tokens", "8"};
  auto strict = ServerProcess::Start(o);
  ASSERT_NE(strict, nullptr);
  r = RunShell(std::string(MODRWKV_LOADGEN) + " --target " + strict->target() +
               " --prompt-tokens 16 --output-tokens 1 --concurrency 2 --requests 2");
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("completed 0  failed 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("first error:"), std::string::npos) << r.out;

  r = RunShell(lg + Target() + " --temperature -1");
  EXPECT_EQ(r.code, 2) << r.out << r.err;
}

}  // namespace
}  // namespace modrwkv::e2e
