// The shared session tier's keys and address checks (the Redis round trips are in
// tests/e2e/shared_sessions_e2e_test.cc, against a real redis-server).
#include "server/shared_sessions.h"

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(SharedSessionTierTest, KeysBindTheOwner) {
  const SessionId id{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const std::string alice = SharedSessionTier::Key(id, "alice");
  EXPECT_EQ(alice.rfind("modrwkv:session:0123456789abcdeffedcba9876543210:", 0), 0u) << alice;
  EXPECT_EQ(alice.size(), std::string("modrwkv:session:").size() + 32 + 1 + 16);
  EXPECT_EQ(alice, SharedSessionTier::Key(id, "alice"));
  EXPECT_NE(alice, SharedSessionTier::Key(id, "bob"));
  EXPECT_NE(alice, SharedSessionTier::Key(id, ""));
  EXPECT_NE(alice, SharedSessionTier::Key(SessionId{1, 2}, "alice"));
}

TEST(SharedSessionTierTest, AddressesAreCheckedUpFront) {
  for (const char* bad :
       {"", "redis://", "redis://host", "host:0", "host:70000", ":6379", "redis://host:port"}) {
    SharedSessionTier::Options o;
    o.address = bad;
    auto t = SharedSessionTier::Start(o, nullptr, nullptr);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  SharedSessionTier::Options o;
  o.address = "redis://127.0.0.1:6379";
  o.ttl = absl::ZeroDuration();
  EXPECT_EQ(SharedSessionTier::Start(o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.ttl = absl::Hours(1);
  for (const char* good : {"redis://127.0.0.1:6379", "redis.default.svc:6379"}) {
    o.address = good;
    EXPECT_TRUE(SharedSessionTier::Start(o, nullptr, nullptr).ok()) << good;  // lazy: no connect
  }
}

}  // namespace
}  // namespace modrwkv::server
