// The prefix cache's map: keys, LRU order, what it hands back to delete.
#include "server/prefix_cache.h"

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

SessionId Id(uint64_t n) { return SessionId{n, n}; }

TEST(PrefixCacheTest, KeysDependOnOwnerRowsAndTheirSplit) {
  const std::vector<InputRows> ab = {InputRows{{1, 2}, {}}};
  const std::vector<InputRows> a_b = {InputRows{{1}, {}}, InputRows{{2}, {}}};
  const std::vector<InputRows> rows = {InputRows{{}, {1.0f, 2.0f}}};
  EXPECT_EQ(PrefixCache::Key("alice", "", ab), PrefixCache::Key("alice", "", ab));
  EXPECT_NE(PrefixCache::Key("alice", "", ab), PrefixCache::Key("bob", "", ab));
  EXPECT_NE(PrefixCache::Key("alice", "", ab), PrefixCache::Key("alice", "", a_b));
  EXPECT_NE(PrefixCache::Key("alice", "", ab), PrefixCache::Key("alice", "", rows));
  EXPECT_EQ(PrefixCache::Key("alice", "", ab).size(), 32u);
  // A prefix run from a trained initial state is another state than the same rows from zeros.
  EXPECT_NE(PrefixCache::Key("alice", "", ab), PrefixCache::Key("alice", "persona", ab));
  EXPECT_NE(PrefixCache::Key("alice", "a", ab), PrefixCache::Key("alicea", "", ab));
}

TEST(PrefixCacheTest, LeastRecentlyUsedGoesAndIsHandedBack) {
  PrefixCache c(2);
  EXPECT_TRUE(c.Insert("a", Id(1), "o").empty());
  EXPECT_TRUE(c.Insert("b", Id(2), "o").empty());
  EXPECT_EQ(c.Find("a"), Id(1));  // "b" is now the least recently used
  std::vector<PrefixCache::Evicted> gone = c.Insert("c", Id(3), "p");
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].session, Id(2));
  EXPECT_EQ(gone[0].owner, "o");
  EXPECT_FALSE(c.Find("b").has_value());
  EXPECT_EQ(c.size(), 2);
  // A key inserted again hands back its previous session.
  gone = c.Insert("a", Id(4), "o");
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].session, Id(1));
  EXPECT_EQ(c.Find("a"), Id(4));
}

TEST(PrefixCacheTest, EraseOnlyDropsTheSessionItWasToldAbout) {
  PrefixCache c(4);
  c.Insert("a", Id(1), "o");
  c.Erase("a", Id(9));  // a stale report: "a" maps to another session now
  EXPECT_EQ(c.Find("a"), Id(1));
  c.Erase("a", Id(1));
  EXPECT_FALSE(c.Find("a").has_value());
  EXPECT_EQ(c.size(), 0);
}

TEST(PrefixCacheTest, ConcurrentMissesOfAKeyWaitForTheFirst) {
  PrefixCache c(4);
  std::vector<std::optional<SessionId>> got;
  const auto waiter = [&](std::optional<SessionId> s) { got.push_back(s); };
  EXPECT_TRUE(c.BeginMiss("a", waiter));   // leads
  EXPECT_FALSE(c.BeginMiss("a", waiter));  // waits
  EXPECT_FALSE(c.BeginMiss("a", waiter));
  EXPECT_TRUE(c.BeginMiss("b", waiter));  // another key leads on its own
  c.EndMiss("a", Id(7));
  EXPECT_EQ(got, (std::vector<std::optional<SessionId>>{Id(7), Id(7)}));
  EXPECT_TRUE(c.BeginMiss("a", waiter));  // over: the next miss leads again
  c.EndMiss("b", std::nullopt);           // no waiters
  got.clear();
  EXPECT_FALSE(c.BeginMiss("a", waiter));
  c.EndMiss("a", std::nullopt);  // the leader failed: the waiter prefills itself
  EXPECT_EQ(got, (std::vector<std::optional<SessionId>>{std::nullopt}));
  c.EndMiss("a", Id(1));  // a second report is a no-op
  EXPECT_EQ(got.size(), 1u);
}

}  // namespace
}  // namespace modrwkv::server
