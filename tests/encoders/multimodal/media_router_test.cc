// MediaRouter: items go to the encoder of their kind, a mixed batch comes back in order, and the
// pool's cache keeps the same bytes sent as two kinds apart.
#include "encoders/multimodal/media_router.h"

#include <future>

#include "encoders/pool/encoder_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/encoders/pool/fake_item_encoder.h"

namespace modrwkv::encoders {
namespace {

using ::testing::HasSubstr;

// A fake whose rows differ from FakeItemEncoder's: every value negated.
class NegatingEncoder : public testing::FakeItemEncoder {
 public:
  std::string id() const override { return "negating-v1"; }
  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override {
    absl::Status st = testing::FakeItemEncoder::EncodeBatch(items, out, pool);
    if (!st.ok()) return st;
    for (EmbeddingRows& r : *out) {
      for (float& v : r.data) v = -v;
    }
    return absl::OkStatus();
  }
};

std::shared_ptr<const MediaRouter> Router() {
  auto r = MediaRouter::Create({{kImageKind, std::make_shared<testing::FakeItemEncoder>()},
                                {kAudioKind, std::make_shared<NegatingEncoder>()}});
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

MediaItem Item(std::string bytes, std::string kind) {
  MediaItem m;
  m.bytes = std::make_shared<const std::string>(std::move(bytes));
  m.kind = std::move(kind);
  m.field = "input[0]." + m.kind;
  return m;
}

TEST(MediaRouterTest, RoutesByKindAndKeepsTheBatchOrder) {
  auto router = Router();
  EXPECT_EQ(router->id(), "audio=negating-v1;image=fake-encoder-v1");
  cpu::ThreadPool pool(1);
  std::vector<std::shared_ptr<const PreparedItem>> prepared;
  for (const MediaItem& m : {Item("one", kImageKind), Item("two", kAudioKind),
                             Item("three", kImageKind), Item("four", kAudioKind)}) {
    auto p = router->Prepare(m, &pool);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ((*p)->kind, m.kind);
    prepared.push_back(*p);
  }
  std::vector<const PreparedItem*> batch;
  for (const auto& p : prepared) batch.push_back(p.get());
  std::vector<EmbeddingRows> out;
  ASSERT_TRUE(router->EncodeBatch(batch, &out, &pool).ok());
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].data, testing::FakeRows("one").data);
  EXPECT_EQ(out[2].data, testing::FakeRows("three").data);
  std::vector<float> two = testing::FakeRows("two").data;
  for (float& v : two) v = -v;
  EXPECT_EQ(out[1].data, two);
}

TEST(MediaRouterTest, AnUnservedKindIsAClearError) {
  auto router = MediaRouter::Create({{kImageKind, std::make_shared<testing::FakeItemEncoder>()}});
  ASSERT_TRUE(router.ok());
  cpu::ThreadPool pool(1);
  auto p = (*router)->Prepare(Item("x", kAudioKind), &pool);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("'audio'"));
  EXPECT_FALSE(MediaRouter::Create({}).ok());
}

// The cache key holds the kind: the same bytes as an image and as audio get their own rows.
TEST(MediaRouterTest, ThePoolCacheKeepsKindsApart) {
  EncoderPoolOptions o;
  o.cache_bytes = 1 << 20;
  auto pool = EncoderPool::Create(Router(), o, nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto encode = [&](const MediaItem& m) {
    std::promise<EncoderPool::Result> done;
    auto job = (*pool)->Submit({m}, [&](EncoderPool::Result r) { done.set_value(std::move(r)); });
    EXPECT_TRUE(job.ok()) << job.status();
    return done.get_future().get();
  };
  auto image = encode(Item("same bytes", kImageKind));
  auto audio = encode(Item("same bytes", kAudioKind));
  auto image_again = encode(Item("same bytes", kImageKind));
  ASSERT_TRUE(image.ok() && audio.ok() && image_again.ok());
  EXPECT_EQ((*image)[0]->data, testing::FakeRows("same bytes").data);
  EXPECT_NE((*audio)[0]->data, (*image)[0]->data);
  EXPECT_EQ((*image_again)[0].get(), (*image)[0].get());  // from the cache
}

}  // namespace
}  // namespace modrwkv::encoders
