// Client-side session routing (server/session_routing.h): a session's calls go to the replica
// whose hint starts the id; without it, every client picks the same live replica.
#include "server/session_routing.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(SessionRoutingTest, IdsCarryTheHintTheyWereMadeWith) {
  const SessionId id = SessionId::Random(0x1a2b3c4du);
  EXPECT_EQ(id.routing_hint(), 0x1a2b3c4du);
  EXPECT_EQ(id.ToString().substr(0, 8), "1a2b3c4d");
  // The other 96 bits are random.
  EXPECT_NE(SessionId::Random(0x1a2b3c4du), id);
}

TEST(SessionRoutingTest, TheReplicaAnnouncingTheHintWins) {
  const SessionId id = SessionId::Random(7);
  const std::vector<Replica> replicas = {{"a:1", 5}, {"b:1", 7}, {"c:1", 9}};
  EXPECT_EQ(PickReplica(id, replicas), 1);
  // A replica that did not answer is never picked, even one whose address looks right.
  const std::vector<Replica> gone = {{"a:1", 5}, {"b:1", std::nullopt}};
  EXPECT_EQ(PickReplica(id, gone), 0);
  EXPECT_EQ(PickReplica(id, std::vector<Replica>{{"a:1", std::nullopt}}), -1);
}

TEST(SessionRoutingTest, WithoutItsReplicaEveryClientPicksTheSameOne) {
  // The owner (hint 1) is gone. The fallback depends on the set of live replicas, not on the
  // order a client lists them in, and moves few sessions when a replica joins.
  const std::vector<Replica> abc = {{"a:1", 2}, {"b:1", 3}, {"c:1", 4}};
  const std::vector<Replica> cab = {{"c:1", 4}, {"a:1", 2}, {"b:1", 3}};
  const std::vector<Replica> abcd = {{"a:1", 2}, {"b:1", 3}, {"c:1", 4}, {"d:1", 5}};
  std::map<std::string, int> load;
  int moved = 0;
  constexpr int kSessions = 2000;
  for (int i = 0; i < kSessions; ++i) {
    const SessionId id = SessionId::Random(1);
    const int p = PickReplica(id, abc);
    ASSERT_GE(p, 0);
    EXPECT_EQ(cab[PickReplica(id, cab)].target, abc[p].target);
    ++load[abc[p].target];
    const std::string& after = abcd[PickReplica(id, abcd)].target;
    if (after != abc[p].target) {
      EXPECT_EQ(after, "d:1") << "a session may only move to the new replica";
      ++moved;
    }
  }
  for (const auto& [target, n] : load) EXPECT_NEAR(n, kSessions / 3, kSessions / 10) << target;
  EXPECT_NEAR(moved, kSessions / 4, kSessions / 10);
}

TEST(SessionRoutingTest, TheWeightIsSha256OfIdAtTarget) {
  // Pinned so that clients in other languages can check theirs: the first 8 bytes of
  // sha256("000000010000000000000000000000ff@10.0.0.5:50051").
  const SessionId id{0x0000000100000000ull, 0xffull};
  EXPECT_EQ(RendezvousWeight(id, "10.0.0.5:50051"), 0x91aaae92e1d8e31dull);
}

TEST(SessionRoutingTest, HintsAreEightHexDigits) {
  EXPECT_EQ(*ParseRoutingHint("00c0FFee"), 0x00c0ffeeu);
  for (const char* bad : {"", "1234567", "123456789", "1234567g"}) {
    EXPECT_EQ(ParseRoutingHint(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace modrwkv::server
