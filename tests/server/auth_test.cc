// Caller identities: bearer-token file format, identities that survive edits of the file, reload,
// client-certificate names, and what is refused.
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
  // A bare token is named by its digest: the first 16 hex digits of SHA-256("bare-token-xyz").
  EXPECT_EQ(*(*a)->IdentifyHeader("Bearer bare-token-xyz"), "token:ab438531375e9ef4");
  EXPECT_EQ(TokenDigestIdentity("bare-token-xyz"), "token:ab438531375e9ef4");
}

TEST(AuthTest, IdentitiesSurviveEditsOfTheFile) {
  auto a = *Authenticator::FromString("bare-token-xyz\n");
  const std::string before = *a->IdentifyHeader("Bearer bare-token-xyz");
  // Lines added above it (and another token) do not rename the caller.
  ASSERT_TRUE(
      a->ReloadFromString("# new\nbob bob-secret-22\nother-token-1\nbare-token-xyz\n").ok());
  EXPECT_EQ(*a->IdentifyHeader("Bearer bare-token-xyz"), before);
  EXPECT_EQ(*a->IdentifyHeader("Bearer other-token-1"), "token:318d6305da0f6023");
  EXPECT_EQ(*a->IdentifyHeader("Bearer bob-secret-22"), "bob");
}

TEST(AuthTest, ReloadSwapsTheTableAndAnInvalidFileKeepsTheOldOne) {
  auto a = *Authenticator::FromString("alice secret-alice\n");
  ASSERT_TRUE(a->ReloadFromString("bob secret-bob-1\n").ok());
  EXPECT_EQ(a->IdentifyHeader("Bearer secret-alice").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(*a->IdentifyHeader("Bearer secret-bob-1"), "bob");
  const absl::Status bad = a->ReloadFromString("bob secret-bob-1\nshort\n");
  EXPECT_NE(bad.message().find("line 2"), std::string::npos) << bad;
  EXPECT_EQ(*a->IdentifyHeader("Bearer secret-bob-1"), "bob");  // still the old table
  EXPECT_EQ(a->num_tokens(), 1u);
  // Without a token file there is nothing to reload.
  EXPECT_EQ(Authenticator::Disabled()->Reload().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(AuthTest, ClientCertificatesAreNamedBySanUriThenDnsThenCommonName) {
  PeerCertificateNames n;
  EXPECT_EQ(CertificateIdentity(n), "");
  n.common_name = {"client-cn"};
  EXPECT_EQ(CertificateIdentity(n), "cert:client-cn");
  n.dns = {"client.example"};
  EXPECT_EQ(CertificateIdentity(n), "cert:client.example");
  n.uri = {"spiffe://example/client", "spiffe://example/other"};
  EXPECT_EQ(CertificateIdentity(n), "cert:spiffe://example/client");
  auto a = Authenticator::Disabled(/*client_certificates=*/true);
  EXPECT_FALSE(a->enabled());
  EXPECT_TRUE(a->client_certificates());
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

TEST(AuthTest, LinesMayGiveTheCallersOwnLimits) {
  auto a = Authenticator::FromString(
      "alice secret-alice max-priority=20 max-requests=3\n"
      "bob secret-bob-1\n"
      "bare-token-xyz max-chat-streams=0\n"
      "eq tok=ends=with=\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*(*a)->IdentifyHeader("Bearer secret-alice"), "alice");
  const CallerLimits alice = (*a)->LimitsOf("alice");
  EXPECT_EQ(alice.max_priority, 20);
  EXPECT_EQ(alice.max_requests, 3);
  EXPECT_FALSE(alice.max_chat_streams.has_value());
  const CallerLimits bob = (*a)->LimitsOf("bob");
  EXPECT_FALSE(bob.max_priority || bob.max_requests || bob.max_chat_streams);
  // A bare token with a limit; a token with '=' in it is still a token.
  const std::string bare = *(*a)->IdentifyHeader("Bearer bare-token-xyz");
  EXPECT_EQ(bare, "token:ab438531375e9ef4");
  EXPECT_EQ((*a)->LimitsOf(bare).max_chat_streams, 0);
  EXPECT_EQ(*(*a)->IdentifyHeader("Bearer tok=ends=with="), "eq");
  // Identities the file does not name (certificates) have none; a reload changes them.
  EXPECT_FALSE((*a)->LimitsOf("cert:client").max_requests.has_value());
  ASSERT_TRUE((*a)->ReloadFromString("alice secret-alice max-requests=1\n").ok());
  EXPECT_EQ((*a)->LimitsOf("alice").max_requests, 1);
  EXPECT_FALSE((*a)->LimitsOf("alice").max_priority.has_value());
}

TEST(AuthTest, BadLimitsAreRejectedWithTheLine) {
  for (const char* text :
       {"alice secret-alice max-priority=101\n", "alice secret-alice max-priority=-1\n",
        "alice secret-alice max-requests=x\n", "alice secret-alice max-requests=\n",
        "alice secret-alice max-requests=1 max-requests=2\n"}) {
    const absl::Status st = Authenticator::FromString(text).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(st.message().find("line 1"), std::string::npos) << st;
    EXPECT_NE(st.message().find("max-"), std::string::npos) << st;
  }
  // A setting the server does not know is a stray word.
  const absl::Status st = Authenticator::FromString("alice secret-alice max-tokens=5\n").status();
  EXPECT_NE(st.message().find("max-requests=N"), std::string::npos) << st;
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
  st = Authenticator::FromString("x token-one-1\ny token-one-1\n").status();
  EXPECT_NE(st.message().find("twice"), std::string::npos) << st;
  // ':' is reserved for derived identities, so a name cannot pose as one.
  st = Authenticator::FromString("token:ab438531375e9ef4 token-one-1\n").status();
  EXPECT_NE(st.message().find("':'"), std::string::npos) << st;
  EXPECT_EQ(Authenticator::FromFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace modrwkv::server
