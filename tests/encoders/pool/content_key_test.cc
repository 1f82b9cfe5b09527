// Cache keys: SHA-256 over a length-prefixed encoder id and the bytes, checked against Python's
// hashlib (hashlib.sha256(struct.pack('<Q', len(id)) + id + bytes)).
#include "encoders/pool/content_key.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/escaping.h"

namespace modrwkv::encoders {
namespace {

std::string Hex(std::string_view id, std::string_view bytes) {
  absl::StatusOr<ContentKey> k = ComputeContentKey(id, bytes);
  EXPECT_TRUE(k.ok()) << k.status();
  if (!k.ok()) return "";
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(k->data()), k->size()));
}

TEST(ContentKeyTest, MatchesHashlib) {
  EXPECT_EQ(Hex("fake-encoder-v1", "hello image"),
            "96acbe66779cff614ec2478681cc455c0b2d5431fd03470e167fdc42caee1ef7");
  EXPECT_EQ(Hex("", ""), "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc");
}

TEST(ContentKeyTest, IdAndBytesDoNotRunTogether) {
  EXPECT_EQ(Hex("ab", "c"), "6d38234db36d6dcc6ff6702b434e13bcdad84fa7a0aed399b15b83a5fe49d721");
  EXPECT_EQ(Hex("a", "bc"), "22a5c7045bc36a32e64f063ff4e7946d8a663238bf27e4f5b32713d987ec51ac");
}

TEST(ContentKeyTest, LargeInput) {
  std::string big(5 << 20, 'x');
  std::string other = big;
  other.back() = 'y';
  EXPECT_NE(Hex("enc", big), Hex("enc", other));
  EXPECT_EQ(Hex("enc", big), Hex("enc", big));
}

}  // namespace
}  // namespace modrwkv::encoders
