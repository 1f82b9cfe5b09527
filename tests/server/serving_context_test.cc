// What the services share: the per-caller stream limit.
#include "server/serving_context.h"

#include "engine/base/errors.h"
#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(PerOwnerLimitTest, CountsStreamsPerCallerAndNamesTheLimit) {
  PerOwnerLimit limit(2, "max-chat-streams-per-owner");
  ASSERT_TRUE(limit.Acquire("alice").ok());
  ASSERT_TRUE(limit.Acquire("alice").ok());
  const absl::Status st = limit.Acquire("alice");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("max-chat-streams-per-owner"), std::string::npos) << st;
  EXPECT_NE(st.message().find("alice"), std::string::npos) << st;
  EXPECT_EQ(ReasonOf(st), "TOO_MANY_STREAMS");
  EXPECT_EQ(limit.open("alice"), 2);       // the refused one is not counted
  EXPECT_TRUE(limit.Acquire("bob").ok());  // another caller has its own budget
  limit.Release("alice");
  EXPECT_TRUE(limit.Acquire("alice").ok());
  limit.Release("bob");
  EXPECT_EQ(limit.open("bob"), 0);
}

TEST(PerOwnerLimitTest, ZeroIsUnbounded) {
  PerOwnerLimit limit(0, "x");
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limit.Acquire("").ok());
  EXPECT_EQ(limit.open(""), 1000);
}

}  // namespace
}  // namespace modrwkv::server
