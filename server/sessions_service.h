// modrwkv.v1.Sessions on the gRPC callback API. Every method maps 1:1 to a Scheduler session
// command, which runs on the scheduler thread between steps and completes the RPC from there.
#pragma once

#include "modrwkv/v1/sessions.grpc.pb.h"
#include "server/serving_context.h"

namespace modrwkv::server {

// Export chunks: small enough to stay far below any message limit, large enough to be cheap.
inline constexpr size_t kSessionChunkBytes = 256 << 10;

class SessionsService final : public pb::Sessions::CallbackService {
 public:
  explicit SessionsService(ServingContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* call,
                                          const pb::CreateSessionRequest* request,
                                          pb::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* call,
                                       const pb::GetSessionRequest* request,
                                       pb::Session* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* call,
                                          const pb::DeleteSessionRequest* request,
                                          pb::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* call,
                                        const pb::ForkSessionRequest* request,
                                        pb::Session* response) override;
  grpc::ServerWriteReactor<pb::SessionBlobChunk>* ExportSession(
      grpc::CallbackServerContext* call, const pb::ExportSessionRequest* request) override;
  grpc::ServerReadReactor<pb::SessionBlobChunk>* ImportSession(grpc::CallbackServerContext* call,
                                                               pb::Session* response) override;

 private:
  ServingContext* const ctx_;
};

// The header of a state blob (read by engine/serving/state_blob.h), for ExportSession's first
// chunk; INVALID_ARGUMENT if `blob` does not start with a valid header.
absl::Status FillBlobHeader(absl::string_view blob, pb::SessionBlobHeader* out);

}  // namespace modrwkv::server
