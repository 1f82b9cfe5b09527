// The LRU-by-bytes cache of encoder outputs.
#include "encoders/pool/embedding_cache.h"

#include <gtest/gtest.h>

namespace modrwkv::encoders {
namespace {

ContentKey Key(uint8_t b) {
  ContentKey k{};
  k[0] = b;
  k[31] = b;
  return k;
}

std::shared_ptr<const EmbeddingRows> Rows(int rows, float value) {
  auto r = std::make_shared<EmbeddingRows>();
  r->rows = rows;
  r->dim = 4;
  r->data.assign(rows * 4, value);  // rows * 16 bytes
  return r;
}

TEST(EmbeddingCacheTest, EvictsLeastRecentlyUsedUntilItFits) {
  EmbeddingCache cache(64);
  cache.Insert(Key(1), Rows(1, 1));  // 16
  cache.Insert(Key(2), Rows(1, 2));  // 32
  cache.Insert(Key(3), Rows(2, 3));  // 64
  EXPECT_EQ(cache.bytes(), 64);
  ASSERT_NE(cache.Lookup(Key(1)), nullptr);  // 1 becomes most recent; order: 1 3 2
  cache.Insert(Key(4), Rows(2, 4));          // needs 32: evicts 2, then 3
  EXPECT_EQ(cache.Lookup(Key(2)), nullptr);
  EXPECT_EQ(cache.Lookup(Key(3)), nullptr);
  ASSERT_NE(cache.Lookup(Key(1)), nullptr);
  EXPECT_EQ(cache.Lookup(Key(1))->data[0], 1);
  EXPECT_EQ(cache.Lookup(Key(4))->data[0], 4);
  EXPECT_EQ(cache.bytes(), 48);
  EXPECT_EQ(cache.entries(), 2u);
}

TEST(EmbeddingCacheTest, ReplacesAndRefusesOversizedRows) {
  EmbeddingCache cache(64);
  cache.Insert(Key(1), Rows(1, 1));
  cache.Insert(Key(1), Rows(2, 5));
  EXPECT_EQ(cache.entries(), 1u);
  EXPECT_EQ(cache.bytes(), 32);
  EXPECT_EQ(cache.Lookup(Key(1))->data[0], 5);
  cache.Insert(Key(2), Rows(5, 2));  // 80 > 64: not stored, nothing evicted
  EXPECT_EQ(cache.Lookup(Key(2)), nullptr);
  EXPECT_NE(cache.Lookup(Key(1)), nullptr);

  EmbeddingCache off(0);
  off.Insert(Key(1), Rows(1, 1));
  EXPECT_EQ(off.Lookup(Key(1)), nullptr);
  EXPECT_EQ(off.bytes(), 0);
}

}  // namespace
}  // namespace modrwkv::encoders
