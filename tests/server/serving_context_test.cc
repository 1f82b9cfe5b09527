// What the services share: the per-caller limits.
#include "server/serving_context.h"

#include "engine/base/errors.h"
#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(PerOwnerLimitTest, CountsPerCallerAndNamesTheLimit) {
  PerOwnerLimit limit(2, "max-chat-streams-per-owner", "Chat streams open", "TOO_MANY_STREAMS");
  std::vector<PerOwnerLimit::Hold> alice;
  for (int i = 0; i < 2; ++i) {
    auto hold = limit.Acquire("alice");
    ASSERT_TRUE(hold.ok());
    alice.push_back(*std::move(hold));
  }
  const absl::Status st = limit.Acquire("alice").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("max-chat-streams-per-owner"), std::string::npos) << st;
  EXPECT_NE(st.message().find("alice"), std::string::npos) << st;
  EXPECT_NE(st.message().find("2 Chat streams open"), std::string::npos) << st;
  EXPECT_EQ(ReasonOf(st), "TOO_MANY_STREAMS");
  EXPECT_EQ(limit.open("alice"), 2);  // the refused one is not counted
  auto bob = limit.Acquire("bob");    // another caller has its own budget
  ASSERT_TRUE(bob.ok());
  alice.pop_back();  // a hold counts until it goes
  EXPECT_EQ(limit.open("alice"), 1);
  EXPECT_TRUE(limit.Acquire("alice").ok());  // and this one went at once
  PerOwnerLimit::Hold moved = *std::move(bob);
  EXPECT_EQ(limit.open("bob"), 1);  // a move does not count twice
  moved.reset();
  EXPECT_EQ(limit.open("bob"), 0);
  moved.reset();  // an empty hold releases nothing
  EXPECT_EQ(limit.open("alice"), 1);
}

TEST(PerOwnerLimitTest, ACallersOwnLimitReplacesTheServers) {
  PerOwnerLimit limit(1, "max-requests-per-owner", "requests in flight", "TOO_MANY_REQUESTS");
  auto first = limit.Acquire("alice", 3);
  auto second = limit.Acquire("alice", 3);
  auto third = limit.Acquire("alice", 3);
  ASSERT_TRUE(first.ok() && second.ok() && third.ok());
  const absl::Status st = limit.Acquire("alice", 3).status();
  EXPECT_EQ(ReasonOf(st), "TOO_MANY_REQUESTS");
  EXPECT_NE(st.message().find("its own limit"), std::string::npos) << st;
  // 0 of its own is unbounded, whatever the server's.
  std::vector<PerOwnerLimit::Hold> bob;
  for (int i = 0; i < 5; ++i) bob.push_back(*limit.Acquire("bob", 0));
  EXPECT_EQ(limit.open("bob"), 5);
}

TEST(PerOwnerLimitTest, ZeroIsUnbounded) {
  PerOwnerLimit limit(0, "x", "things", "R");
  std::vector<PerOwnerLimit::Hold> holds;
  for (int i = 0; i < 1000; ++i) holds.push_back(*limit.Acquire(""));
  EXPECT_EQ(limit.open(""), 1000);
}

}  // namespace
}  // namespace modrwkv::server
