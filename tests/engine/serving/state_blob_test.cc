#include "engine/serving/state_blob.h"

#include "engine/base/errors.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

ModelConfig Config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 1;
  c.head_size = 64;
  return c;
}

TEST(StateBlob, RoundTripsStateAndHeader) {
  const ModelConfig c = Config();
  std::vector<float> state(c.StateFloats());
  for (size_t i = 0; i < state.size(); ++i) state[i] = 0.5f * static_cast<float>(i) - 3;
  StateBlobHeader h;
  h.model_fingerprint = 0x1234;
  h.n_layer = 2;
  h.n_embd = 64;
  h.tokens = 77;
  h.pending_token = 24;
  const std::string blob = EncodeStateBlob(h, state);
  EXPECT_EQ(blob.size(), 72 + state.size() * 4);
  std::vector<float> out;
  auto got = DecodeStateBlob(blob, c, 0x1234, &out);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(out, state);
  EXPECT_EQ(got->tokens, 77);
  EXPECT_EQ(got->pending_token, 24);
}

TEST(StateBlob, PeekReadsTheHeaderWithoutTheModel) {
  const ModelConfig c = Config();
  std::vector<float> state(c.StateFloats(), 2.0f);
  StateBlobHeader h;
  h.model_fingerprint = 0xabcd;
  h.n_layer = 2;
  h.n_embd = 64;
  h.tokens = 5;
  const std::string blob = EncodeStateBlob(h, state);
  auto got = PeekStateBlobHeader(blob);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->format_version, kStateBlobVersion);
  EXPECT_EQ(got->model_fingerprint, 0xabcdu);
  EXPECT_EQ(got->n_layer, 2);
  EXPECT_EQ(got->n_embd, 64);
  EXPECT_EQ(got->head_size, 64);
  EXPECT_EQ(got->tokens, 5);
  EXPECT_EQ(got->payload_crc32c, Crc32c(state.data(), state.size() * 4));
  EXPECT_FALSE(PeekStateBlobHeader(blob.substr(0, kStateBlobHeaderBytes - 1)).ok());
  std::string bad = blob;
  bad[30] ^= 1;  // n_layer: the header checksum no longer matches
  EXPECT_FALSE(PeekStateBlobHeader(bad).ok());
}

TEST(StateBlob, RefusesEveryKindOfDamage) {
  const ModelConfig c = Config();
  std::vector<float> state(c.StateFloats(), 1.0f), out;
  StateBlobHeader h;
  h.model_fingerprint = 9;
  h.n_layer = 2;
  h.n_embd = 64;
  const std::string blob = EncodeStateBlob(h, state);
  const absl::Status other = DecodeStateBlob(blob, c, 10, &out).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);  // other model
  EXPECT_EQ(ReasonOf(other), reason::kStateModelMismatch);
  ModelConfig wider = c;
  wider.n_embd = 128;
  wider.n_head = 2;
  EXPECT_EQ(DecodeStateBlob(blob, wider, 9, &out).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Every truncation and every single-byte flip is refused, never accepted or crashed on.
  for (size_t n = 0; n < blob.size(); n += 37) {
    EXPECT_FALSE(DecodeStateBlob(blob.substr(0, n), c, 9, &out).ok()) << n;
  }
  for (size_t i = 0; i < blob.size(); i += 13) {
    std::string bad = blob;
    bad[i] ^= 0x10;
    EXPECT_FALSE(DecodeStateBlob(bad, c, 9, &out).ok()) << i;
  }
  EXPECT_FALSE(DecodeStateBlob(blob + "x", c, 9, &out).ok());
}

TEST(StateBlob, Crc32cKnownVector) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value
}

}  // namespace
}  // namespace modrwkv
