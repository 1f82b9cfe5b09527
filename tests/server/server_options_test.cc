// Server options: derived defaults and start-up validation of the request caps.
#include "server/server_options.h"

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

ServerOptions Valid() {
  ServerOptions o;
  o.model_path = std::string(MODRWKV_SOURCE_DIR) + "/CMakeLists.txt";  // any readable file
  return o;
}

TEST(ServerOptionsTest, MetricsListenWhereGrpcDoesUnlessTold) {
  ServerOptions o = Valid();
  o.host = "127.0.0.1";
  EXPECT_EQ(o.EffectiveMetricsHost(), "127.0.0.1");
  o.metrics_host = "0.0.0.0";
  EXPECT_EQ(o.EffectiveMetricsHost(), "0.0.0.0");
  EXPECT_TRUE(o.reflection);
}

TEST(ServerOptionsTest, DefaultMaxTokensIsCappedByTheLimit) {
  ServerOptions o = Valid();
  EXPECT_EQ(o.EffectiveDefaultMaxTokens(), 256);
  o.max_tokens_limit = 100;
  EXPECT_EQ(o.EffectiveDefaultMaxTokens(), 100);
  o.default_max_tokens = 30;
  EXPECT_EQ(o.EffectiveDefaultMaxTokens(), 30);
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  o.default_max_tokens = 101;
  const absl::Status st = o.Validate();
  EXPECT_NE(st.message().find("default-max-tokens (101) must be <= max-tokens-limit (100)"),
            std::string::npos)
      << st;
}

TEST(ServerOptionsTest, NegativeCapsAreRefusedNamingTheOption) {
  for (auto set : std::vector<std::pair<const char*, void (*)(ServerOptions*)>>{
           {"max-tokens-limit", [](ServerOptions* o) { o->max_tokens_limit = -1; }},
           {"default-max-tokens", [](ServerOptions* o) { o->default_max_tokens = -1; }},
           {"max-chat-streams-per-owner",
            [](ServerOptions* o) { o->max_chat_streams_per_owner = -1; }},
           {"default-timeout", [](ServerOptions* o) { o->default_timeout = absl::Seconds(-1); }}}) {
    ServerOptions o = Valid();
    set.second(&o);
    const absl::Status st = o.Validate();
    EXPECT_NE(st.message().find(set.first), std::string::npos) << set.first << ": " << st;
  }
}

TEST(ServerOptionsTest, WriteThroughNeedsATierWhoseEntriesOutliveLocalCopies) {
  ServerOptions o = Valid();
  o.shared_session_write_through = true;
  EXPECT_NE(o.Validate().message().find("needs --shared-sessions"), std::string::npos)
      << o.Validate();
  o.shared_sessions = "redis://127.0.0.1:6379";
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();  // both TTLs 1h
  o.scheduler.session_ttl = absl::Hours(2);
  EXPECT_NE(o.Validate().message().find("shared-session-ttl (1h) must be >= session-ttl (2h)"),
            std::string::npos)
      << o.Validate();
  o.shared_session_write_through = false;  // without write-through copies are moved, not kept
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  o.shared_sessions_password_file = "/nonexistent/redis-password";
  EXPECT_NE(o.Validate().message().find("shared-sessions-password-file"), std::string::npos)
      << o.Validate();
  o.shared_sessions.clear();
  EXPECT_NE(o.Validate().message().find("needs --shared-sessions"), std::string::npos)
      << o.Validate();
}

}  // namespace
}  // namespace modrwkv::server
