// The shared session tier: keys, address checks, and its protocol against a real redis-server
// (tiers standing for replicas; the servers themselves are in
// tests/e2e/shared_sessions_e2e_test.cc).
#include "server/shared_sessions.h"

#include <fstream>
#include <future>
#include <tuple>

#include "gtest/gtest.h"
#include "tests/redis_process.h"

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

// A tier as one replica sees it, with its asynchronous operations waited for.
class Replica {
 public:
  Replica(const std::string& url, bool write_through, const std::string& username = "",
          const std::string& password = "") {
    SharedSessionTier::Options o;
    o.address = url;
    o.write_through = write_through;
    o.username = username;
    o.password = password;
    auto t = SharedSessionTier::Start(o, nullptr, nullptr);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) tier_ = *std::move(t);
  }
  absl::Status Put(SessionId id, const std::string& blob) {
    std::promise<absl::Status> p;
    tier_->Put(id, "alice", blob, [&](absl::Status st) { p.set_value(st); });
    return p.get_future().get();
  }
  absl::Status HandOff(SessionId id, const std::string& blob) {
    std::promise<absl::Status> p;
    tier_->HandOff(id, "alice", blob, [&](absl::Status st) { p.set_value(st); });
    return p.get_future().get();
  }
  // The blob, "" when there is none, or "error: ..." when the operation failed.
  std::string Take(SessionId id) {
    std::promise<std::string> p;
    tier_->Take(id, "alice", [&](absl::StatusOr<std::optional<std::string>> b) {
      p.set_value(!b.ok() ? "error: " + b.status().ToString() : b->value_or(""));
    });
    return p.get_future().get();
  }
  absl::StatusOr<bool> Check(SessionId id) {
    std::promise<absl::StatusOr<bool>> p;
    tier_->Check(id, "alice", [&](absl::StatusOr<bool> c) { p.set_value(c); });
    return p.get_future().get();
  }
  absl::Status Remove(SessionId id) {
    std::promise<absl::Status> p;
    tier_->Remove(id, "alice", [&](absl::Status st) { p.set_value(st); });
    return p.get_future().get();
  }

 private:
  std::unique_ptr<SharedSessionTier> tier_;
};

const SessionId kSession{0x1111, 0x2222};

TEST(SharedSessionTierRedisTest, MoveSemanticsTakeOutWhatWasHandedOff) {
  auto redis = testing_redis::RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  Replica a(redis->url(), false), b(redis->url(), false);
  EXPECT_EQ(b.Take(kSession), "");
  ASSERT_TRUE(a.Put(kSession, "state one").ok());
  ASSERT_TRUE(a.Put(kSession, "state two").ok());  // a hand-off replaces what was there
  EXPECT_EQ(b.Take(kSession), "state two");
  EXPECT_EQ(a.Take(kSession), "");  // in one place only: taken out
}

TEST(SharedSessionTierRedisTest, WriteThroughKeepsTheLatestStateAndTellsStaleCopies) {
  auto redis = testing_redis::RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  Replica a(redis->url(), true), b(redis->url(), true), c(redis->url(), true);
  EXPECT_EQ(a.Check(kSession).value_or(false), true);  // nothing stored: the local copy serves
  ASSERT_TRUE(a.Put(kSession, "turn 1").ok());
  ASSERT_TRUE(a.Put(kSession, "turn 2").ok());  // the owner's stores follow each other
  EXPECT_EQ(a.Check(kSession).value_or(false), true);

  // A crash: B resumes the session; the entry stays (claimed), so B's own later stores and a
  // third replica's resume find it.
  EXPECT_EQ(b.Take(kSession), "turn 2");
  EXPECT_EQ(a.Check(kSession).value_or(true), false);  // A's copy is stale now
  const absl::Status late = a.Put(kSession, "turn 3 on a stale copy");
  EXPECT_EQ(late.code(), absl::StatusCode::kAborted) << late;
  ASSERT_TRUE(b.Put(kSession, "turn 3").ok());
  EXPECT_EQ(b.Check(kSession).value_or(false), true);

  // A replica that never held the session cannot overwrite it, even with no copy to compare.
  EXPECT_EQ(c.Put(kSession, "a stranger's state").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(c.Take(kSession), "turn 3");
  EXPECT_EQ(b.Put(kSession, "turn 4 on b").code(), absl::StatusCode::kAborted);
  // A, whose copy was stale, resumes it again and carries on.
  EXPECT_EQ(a.Take(kSession), "turn 3");
  ASSERT_TRUE(a.Put(kSession, "turn 4").ok());
  EXPECT_EQ(c.Check(kSession).value_or(true), false);

  // A deleted session is gone for every replica, and a copy left anywhere is stale.
  ASSERT_TRUE(a.Remove(kSession).ok());
  EXPECT_EQ(c.Check(kSession).value_or(true), false);
  EXPECT_EQ(b.Take(kSession), "");
  EXPECT_EQ(a.Check(kSession).value_or(true), false);
}

TEST(SharedSessionTierRedisTest, WriteThroughHandsOffOnlyWhatRedisDoesNotHaveYet) {
  auto redis = testing_redis::RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  Replica a(redis->url(), true), b(redis->url(), true);
  const SessionId stored{1, 1}, never_stored{2, 2};
  ASSERT_TRUE(a.Put(stored, "turn 1").ok());
  // Stored after its last change: a drain has nothing to send (the blob here is not sent).
  ASSERT_TRUE(a.HandOff(stored, "not sent").ok());
  ASSERT_TRUE(a.HandOff(never_stored, "first state").ok());
  EXPECT_EQ(b.Take(stored), "turn 1");
  EXPECT_EQ(b.Take(never_stored), "first state");

  // A store lost in an outage: the hand-off after it sends the state.
  const SessionId dirty{3, 3};
  ASSERT_TRUE(a.Put(dirty, "turn 1").ok());
  redis->Stop();
  EXPECT_EQ(a.Put(dirty, "turn 2").code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(redis->Restart());  // empty: as if its entries had expired meanwhile
  ASSERT_TRUE(a.HandOff(dirty, "turn 2").ok());
  EXPECT_EQ(b.Take(dirty), "turn 2");
}

TEST(SharedSessionTierTest, PasswordFilesHoldAPasswordOrAUserAndAPassword) {
  const std::string path = ::testing::TempDir() + "/redis_password";
  auto read = [&](const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
    SharedSessionTier::Options o;
    const absl::Status st = SharedSessionTier::ReadPasswordFile(path, &o);
    return std::make_tuple(st, o.username, o.password);
  };
  EXPECT_EQ(read("s3cret\n"),
            std::make_tuple(absl::OkStatus(), std::string(), std::string("s3cret")));
  EXPECT_EQ(read("modrwkv s3cret"),
            std::make_tuple(absl::OkStatus(), std::string("modrwkv"), std::string("s3cret")));
  for (const char* bad : {"", "\n", "a b hidden-word"}) {
    const absl::Status st = std::get<0>(read(bad));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find(path), std::string::npos) << st;
    EXPECT_EQ(st.message().find("hidden-word"), std::string::npos) << st;  // never the contents
  }
  SharedSessionTier::Options o;
  EXPECT_EQ(SharedSessionTier::ReadPasswordFile(path + ".missing", &o).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SharedSessionTierRedisTest, ARedisThatRequiresAPasswordGetsIt) {
  auto redis = testing_redis::RedisProcess::Start({"--requirepass", "s3cret"});
  ASSERT_NE(redis, nullptr);
  Replica with(redis->url(), true, "", "s3cret"), without(redis->url(), true),
      wrong(redis->url(), true, "", "guess");
  ASSERT_TRUE(with.Put(kSession, "turn 1").ok());
  EXPECT_EQ(without.Take(kSession).rfind("error: UNAVAILABLE", 0), 0u);
  const std::string refused = wrong.Take(kSession);
  EXPECT_NE(refused.find("AUTH refused"), std::string::npos) << refused;
  EXPECT_EQ(refused.find("guess"), std::string::npos) << refused;
  Replica user(redis->url(), true, "default", "s3cret");  // an ACL user and its password
  EXPECT_EQ(user.Take(kSession), "turn 1");
}

TEST(SharedSessionTierRedisTest, AnOutageIsUnavailable) {
  auto redis = testing_redis::RedisProcess::Start();
  ASSERT_NE(redis, nullptr);
  Replica a(redis->url(), true);
  ASSERT_TRUE(a.Put(kSession, "turn 1").ok());
  redis->Stop();
  EXPECT_EQ(a.Put(kSession, "turn 2").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.Check(kSession).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.Take(kSession).rfind("error: UNAVAILABLE", 0), 0u);
}

}  // namespace
}  // namespace modrwkv::server
