// Image parts on their way to the encoder pool: decode errors name the request's field, a queue
// that cannot take a request now is RESOURCE_EXHAUSTED (ENCODER_QUEUE_FULL, counted), a request
// that could never fit is INVALID_ARGUMENT, and rows come back in the parts' order.
#include "server/media_requests.h"

#include <future>

#include "engine/base/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/serving_context.h"
#include "tests/encoders/pool/fake_item_encoder.h"

namespace modrwkv::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

PendingMedia Image(size_t part, std::string bytes, std::string field) {
  PendingMedia p;
  p.part = part;
  p.bytes = std::make_shared<const std::string>(std::move(bytes));
  p.field = std::move(field);
  return p;
}

class MediaRequestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    encoder_ = std::make_shared<encoders::testing::FakeItemEncoder>();
    encoders::EncoderPoolOptions o;
    o.max_queued_items = 2;
    o.max_batch = 1;
    o.cache_bytes = 0;
    pool_ = encoders::EncoderPool::Create(encoder_, o, nullptr).value();
    metrics_ = Metrics::Create("").value();
    ctx_.media_pool = pool_.get();
    ctx_.metrics = metrics_.get();
    ctx_.options = &options_;
  }
  void TearDown() override {
    encoder_->Open();
    pool_.reset();
  }

  // Submits and waits for the result.
  EncodedMedia Encode(const std::vector<PendingMedia>& images) {
    std::promise<EncodedMedia> p;
    auto job =
        EncodeMedia(&ctx_, images, 0, "", [&](EncodedMedia r) { p.set_value(std::move(r)); });
    if (!job.ok()) return job.status();
    return p.get_future().get();
  }

  std::string MetricsText() {
    prometheus::TextSerializer s;
    return s.Serialize(metrics_->registry()->Collect());
  }

  std::shared_ptr<encoders::testing::FakeItemEncoder> encoder_;
  std::unique_ptr<encoders::EncoderPool> pool_;
  std::unique_ptr<Metrics> metrics_;
  ServerOptions options_;
  ServingContext ctx_;
};

TEST_F(MediaRequestsTest, RowsComeBackInThePartsOrder) {
  EncodedMedia r =
      Encode({Image(0, "first image", "input[0].image"), Image(2, "second", "input[2].image")});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0]->data, encoders::testing::FakeRows("first image").data);
  EXPECT_EQ((*r)[1]->data, encoders::testing::FakeRows("second").data);
}

TEST_F(MediaRequestsTest, ADecodeErrorNamesTheField) {
  EncodedMedia r = Encode({Image(0, "fine", "images[0]"), Image(1, "bad bytes", "images[1]")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FieldOf(r.status()), "images[1]");
  EXPECT_THAT(r.status().message(), HasSubstr("images[1]: cannot decode image"));
}

TEST_F(MediaRequestsTest, AFullQueueIsResourceExhaustedAndCounted) {
  encoder_->Close();
  std::vector<std::promise<EncodedMedia>> done(2);
  // One image runs (blocked in the encoder), two wait: the queue (2) is full.
  ASSERT_TRUE(EncodeMedia(&ctx_, {Image(0, "a", "input[0].image")}, 0, "", [&](EncodedMedia r) {
                done[0].set_value(std::move(r));
              }).ok());
  encoder_->WaitBatches(1);
  ASSERT_TRUE(EncodeMedia(&ctx_, {Image(0, "b", "input[0].image"), Image(1, "c", "input[1].image")},
                          0, "", [&](EncodedMedia r) { done[1].set_value(std::move(r)); })
                  .ok());
  auto refused = EncodeMedia(&ctx_, {Image(0, "d", "input[0].image")}, 0, "",
                             [](EncodedMedia) { ADD_FAILURE() << "a refused job completed"; });
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(refused.status()), "ENCODER_QUEUE_FULL");
  EXPECT_THAT(refused.status().message(), HasSubstr("encoder-queue-items"));
  EXPECT_THAT(MetricsText(),
              HasSubstr("modrwkv_admission_rejections_total{reason=\"encoder_queue_full\"} 1\n"));
  encoder_->Open();
  for (auto& d : done) EXPECT_TRUE(d.get_future().get().ok());
}

TEST_F(MediaRequestsTest, TheRequestsPriorityOrdersTheEncoderQueue) {
  encoder_->Close();
  std::vector<std::promise<EncodedMedia>> done(3);
  auto submit = [&](int i, const char* bytes, int priority) {
    ASSERT_TRUE(EncodeMedia(&ctx_, {Image(0, bytes, "input[0].image")}, priority, "",
                            [&, i](EncodedMedia r) { done[i].set_value(std::move(r)); })
                    .ok());
  };
  submit(0, "running", 0);
  encoder_->WaitBatches(1);
  submit(1, "batch job", -10);
  submit(2, "interactive", 0);
  encoder_->Open();
  for (auto& d : done) EXPECT_TRUE(d.get_future().get().ok());
  EXPECT_THAT(encoder_->encoded(), ElementsAre("running", "interactive", "batch job"));
}

TEST_F(MediaRequestsTest, CallersTakeTurnsInTheEncoderQueueUnlessFairnessIsOff) {
  for (const bool fair : {true, false}) {
    options_.scheduler.fair_callers = fair;
    auto encoder = std::make_shared<encoders::testing::FakeItemEncoder>();
    encoders::EncoderPoolOptions o;
    o.max_batch = 1;
    o.cache_bytes = 0;
    auto pool = encoders::EncoderPool::Create(encoder, o, nullptr).value();
    ctx_.media_pool = pool.get();
    encoder->Close();
    std::vector<std::promise<EncodedMedia>> done(4);
    auto submit = [&](int i, const char* bytes, const std::string& owner) {
      ASSERT_TRUE(
          EncodeMedia(&ctx_, {Image(0, bytes, "input[0].image")}, 0, owner, [&, i](EncodedMedia r) {
            done[i].set_value(std::move(r));
          }).ok());
    };
    submit(0, "running", "alice");
    encoder->WaitBatches(1);
    submit(1, "alice 1", "alice");
    submit(2, "alice 2", "alice");
    submit(3, "bob 1", "bob");
    encoder->Open();
    for (auto& d : done) EXPECT_TRUE(d.get_future().get().ok());
    if (fair) {  // alice has had her turn (the running one): bob's goes first
      EXPECT_THAT(encoder->encoded(), ElementsAre("running", "bob 1", "alice 1", "alice 2"));
    } else {
      EXPECT_THAT(encoder->encoded(), ElementsAre("running", "alice 1", "alice 2", "bob 1"));
    }
    ctx_.media_pool = pool_.get();
  }
}

TEST_F(MediaRequestsTest, MoreImagesThanTheQueueCanEverHoldIsInvalid) {
  auto r = EncodeMedia(
      &ctx_, {Image(0, "a", "images[0]"), Image(1, "b", "images[1]"), Image(2, "c", "images[2]")},
      0, "", [](EncodedMedia) { ADD_FAILURE() << "a refused job completed"; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("encoder-queue-items"));
}

}  // namespace
}  // namespace modrwkv::server
