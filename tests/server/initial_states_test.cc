// The server's registry of trained initial states (server/initial_states.cc): names, the default,
// and what a request's `initial_state` field resolves to.
#include "server/initial_states.h"

#include "engine/base/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const InitialState> State(const std::string& name) {
  auto s = std::make_shared<InitialState>();
  s->name = name;
  s->state = {1.0f, 2.0f};
  return s;
}

TEST(InitialStatesTest, ResolvesNamesTheDefaultAndNone) {
  auto persona = State("persona");
  auto model = State(InitialStates::kModel);
  absl::StatusOr<InitialStates> states = InitialStates::Create({persona, model}, "");
  ASSERT_TRUE(states.ok()) << states.status();
  EXPECT_EQ(states->names(), (std::vector<std::string>{"model", "persona"}));
  EXPECT_EQ(states->default_name(), "model");  // a checkpoint's own state is the default
  EXPECT_EQ(states->Resolve("", false, "initial_state").value(), model);
  EXPECT_EQ(states->Resolve("persona", false, "initial_state").value(), persona);
  EXPECT_EQ(states->Resolve("none", false, "initial_state").value(), nullptr);
  // On a session only "" is accepted, and means the session's own state.
  EXPECT_EQ(states->Resolve("", true, "initial_state").value(), nullptr);
  absl::Status st = states->Resolve("persona", true, "initial_state").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(st), "initial_state");

  st = states->Resolve("nope", false, "initial_state").status();
  EXPECT_EQ(FieldOf(st), "initial_state");
  EXPECT_THAT(st.message(), HasSubstr("no state called 'nope' (states: model, persona)"));

  states = InitialStates::Create({persona, model}, "none");
  ASSERT_TRUE(states.ok()) << states.status();
  EXPECT_EQ(states->default_name(), "");
  EXPECT_EQ(states->Resolve("", false, "initial_state").value(), nullptr);
  states = InitialStates::Create({persona}, "persona");
  ASSERT_TRUE(states.ok()) << states.status();
  EXPECT_EQ(states->Resolve("", false, "initial_state").value(), persona);

  states = InitialStates::Create({}, "");
  ASSERT_TRUE(states.ok());
  EXPECT_EQ(states->default_name(), "");
  EXPECT_THAT(states->Resolve("persona", false, "x").status().message(),
              HasSubstr("--initial-state NAME=PATH"));
}

TEST(InitialStatesTest, RefusesBadNamesDuplicatesAndAnUnknownDefault) {
  struct Bad {
    std::vector<std::shared_ptr<const InitialState>> states;
    std::string default_name, message;
  };
  const std::vector<Bad> bad = {
      {{State("none")}, "", "'none' is not a state name"},
      {{State("")}, "", "'' is not a state name"},
      {{State("a b")}, "", "'a b' is not a state name"},
      {{State(std::string(65, 'a'))}, "", "is not a state name"},
      {{State("a"), State("a")}, "", "two states are called 'a'"},
      {{State("model"), State("model")}, "", "the model checkpoint carries a state"},
      {{State("a")}, "b", "default-initial-state: no state called 'b' (states: a)"},
  };
  for (const Bad& b : bad) {
    absl::StatusOr<InitialStates> s = InitialStates::Create(b.states, b.default_name);
    ASSERT_FALSE(s.ok()) << b.message;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr(b.message));
  }
}

}  // namespace
}  // namespace modrwkv::server
