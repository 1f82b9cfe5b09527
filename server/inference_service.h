// modrwkv.v1.Inference on the gRPC callback API: Generate, Chat and Forecast hand off to their
// reactors; the other unary methods run inline (tokenizer work is microseconds and never waits on
// the scheduler).
#pragma once

#include "modrwkv/v1/inference.grpc.pb.h"
#include "server/serving_context.h"

namespace modrwkv::server {

class InferenceService final : public pb::Inference::CallbackService {
 public:
  explicit InferenceService(ServingContext* ctx) : ctx_(ctx) {}

  grpc::ServerWriteReactor<pb::GenerateResponse>* Generate(
      grpc::CallbackServerContext* call, const pb::GenerateRequest* request) override;
  grpc::ServerBidiReactor<pb::ChatRequest, pb::ChatResponse>* Chat(
      grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* call,
                                     const pb::TokenizeRequest* request,
                                     pb::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* call,
                                       const pb::DetokenizeRequest* request,
                                       pb::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* call,
                                         const pb::GetModelInfoRequest* request,
                                         pb::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Forecast(grpc::CallbackServerContext* call,
                                     const pb::ForecastRequest* request,
                                     pb::ForecastResponse* response) override;

 private:
  // Finishes a unary call with `status` and logs it.
  grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* call, absl::string_view method,
                                        const std::string& owner, const absl::Status& status);

  ServingContext* const ctx_;
};

}  // namespace modrwkv::server
