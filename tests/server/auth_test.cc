// Bearer tokens: file format, identities, and what is refused.
#include "server/auth.h"

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(AuthTest, DisabledLetsEveryoneInAsTheEmptyIdentity) {
  auto a = Authenticator::Disabled();
  EXPECT_FALSE(a->enabled());
  EXPECT_EQ(*a->IdentifyHeader(""), "");
}

TEST(AuthTest, NamedAndAnonymousTokens) {
  auto a = Authenticator::FromString("# comment\n\nalice secret-alice\r\nbare-token-xyz\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->num_tokens(), 2u);
  EXPECT_EQ(*(*a)->IdentifyHeader("Bearer secret-alice"), "alice");
  EXPECT_EQ(*(*a)->IdentifyHeader("bearer secret-alice"), "alice");
  EXPECT_EQ(*(*a)->IdentifyHeader("Bearer bare-token-xyz"), "token-4");  // its line number
}

TEST(AuthTest, RefusesMissingMalformedAndWrongTokens) {
  auto a = *Authenticator::FromString("alice secret-alice\n");
  for (const char* header : {"", "secret-alice", "Basic secret-alice", "Bearer ",
                             "Bearer secret-alicE", "Bearer secret-alice2"}) {
    auto id = a->IdentifyHeader(header);
    EXPECT_EQ(id.status().code(), absl::StatusCode::kUnauthenticated) << header;
    EXPECT_EQ(id.status().message().find("secret"), std::string::npos) << "echoes the token";
  }
}

TEST(AuthTest, BadFilesAreRejectedWithTheLine) {
  EXPECT_FALSE(Authenticator::FromString("").ok());
  EXPECT_FALSE(Authenticator::FromString("# only comments\n").ok());
  auto st = Authenticator::FromString("ok-token-1\na b c\n").status();
  EXPECT_NE(st.message().find("line 2"), std::string::npos) << st;
  st = Authenticator::FromString("short\n").status();
  EXPECT_NE(st.message().find("shorter than 8"), std::string::npos) << st;
  st = Authenticator::FromString("x token-one-1\nx token-two-2\n").status();
  EXPECT_NE(st.message().find("duplicate name"), std::string::npos) << st;
  EXPECT_EQ(Authenticator::FromFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace modrwkv::server
