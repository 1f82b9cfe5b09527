// absl::Status -> grpc::Status with google.rpc details: the one mapping every error goes through.
#include "server/status_mapping.h"

#include "engine/sampling/sampler.h"
#include "engine/text/stop_conditions.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

google::rpc::Status Unpack(const grpc::Status& s) {
  google::rpc::Status rpc;
  EXPECT_TRUE(rpc.ParseFromString(s.error_details()));
  return rpc;
}

template <typename T>
std::optional<T> Detail(const google::rpc::Status& rpc) {
  for (const auto& any : rpc.details()) {
    T t;
    if (any.UnpackTo(&t)) return t;
  }
  return std::nullopt;
}

TEST(StatusMappingTest, OkStaysOk) {
  grpc::Status s = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE(s.error_details().empty());
}

TEST(StatusMappingTest, InvalidFieldBecomesBadRequestAndErrorInfo) {
  grpc::Status s = ToGrpcStatus(InvalidField("sampling.top_p", "sampling.top_p must be in (0, 1]"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "sampling.top_p must be in (0, 1]");
  const google::rpc::Status rpc = Unpack(s);
  EXPECT_EQ(rpc.code(), 3);
  EXPECT_EQ(rpc.message(), s.error_message());
  auto info = Detail<google::rpc::ErrorInfo>(rpc);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->domain(), "modrwkv");
  EXPECT_EQ(info->reason(), "INVALID_ARGUMENT");
  auto bad = Detail<google::rpc::BadRequest>(rpc);
  ASSERT_TRUE(bad.has_value());
  ASSERT_EQ(bad->field_violations_size(), 1);
  EXPECT_EQ(bad->field_violations(0).field(), "sampling.top_p");
  EXPECT_FALSE(Detail<google::rpc::RetryInfo>(rpc).has_value());
}

TEST(StatusMappingTest, OverloadAndUnavailableCarryRetryInfo) {
  const google::rpc::Status queue = Unpack(ToGrpcStatus(
      WithReason(absl::ResourceExhaustedError("request queue is full (4 waiting)"), "QUEUE_FULL")));
  EXPECT_EQ(Detail<google::rpc::ErrorInfo>(queue)->reason(), "QUEUE_FULL");
  auto retry = Detail<google::rpc::RetryInfo>(queue);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->retry_delay().seconds(), 1);

  const google::rpc::Status other =
      Unpack(ToGrpcStatus(absl::ResourceExhaustedError("out of something")));
  EXPECT_EQ(Detail<google::rpc::ErrorInfo>(other)->reason(), "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(Detail<google::rpc::RetryInfo>(other).has_value());

  const google::rpc::Status draining = Unpack(ToGrpcStatus(
      WithRetryDelay(WithReason(absl::UnavailableError("server is draining"), "DRAINING"),
                     absl::Milliseconds(250))));
  EXPECT_EQ(Detail<google::rpc::ErrorInfo>(draining)->reason(), "DRAINING");
  retry = Detail<google::rpc::RetryInfo>(draining);
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(retry->retry_delay().seconds(), 0);
  EXPECT_EQ(retry->retry_delay().nanos(), 250000000);
}

TEST(StatusMappingTest, ReasonIsThePayloadElseTheCodeName) {
  EXPECT_EQ(ErrorInfoReason(WithReason(absl::ResourceExhaustedError("x"), "MINE")), "MINE");
  // Messages are not parsed: an engine error without a reason gets its code's name.
  EXPECT_EQ(ErrorInfoReason(absl::NotFoundError("session_id 00 not found")), "NOT_FOUND");
  EXPECT_EQ(ErrorInfoReason(absl::InternalError("boom")), "INTERNAL");
  EXPECT_EQ(ErrorInfoReason(absl::OkStatus()), "");
}

TEST(StatusMappingTest, EngineValidationErrorsAreRenamedToRequestFields) {
  SamplerConfig p;
  p.top_p = 2;
  absl::Status s = RenameEngineField(p.Validate(512));
  EXPECT_EQ(s.message(), "sampling.top_p must be in (0, 1], got 2");
  grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(Detail<google::rpc::BadRequest>(Unpack(g))->field_violations(0).field(),
            "sampling.top_p");

  p = SamplerConfig{};
  p.banned_tokens = {1, 2, 3, 99999};
  s = RenameEngineField(p.Validate(512));
  EXPECT_EQ(s.message(), "sampling.banned_token_ids[3] = 99999 is outside the vocabulary [0, 512)");
  EXPECT_EQ(Detail<google::rpc::BadRequest>(Unpack(ToGrpcStatus(s)))->field_violations(0).field(),
            "sampling.banned_token_ids[3]");

  StopConditions stop;
  stop.max_tokens = 0;
  s = RenameEngineField(stop.Validate(512));
  EXPECT_EQ(s.message(), "stop.max_tokens must be >= 1, got 0");
  EXPECT_EQ(FieldOf(s), "stop.max_tokens");

  // Errors without a field, and other codes, pass unchanged.
  s = RenameEngineField(absl::InvalidArgumentError("top_p is what this message starts with"));
  EXPECT_EQ(s.message(), "top_p is what this message starts with");
  EXPECT_EQ(FieldOf(s), "");
  s = RenameEngineField(WithField(absl::NotFoundError("top_p"), "top_p"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace modrwkv::server
