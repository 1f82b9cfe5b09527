#include "server/sessions_service.h"

#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/serving/state_blob.h"
#include "server/status_mapping.h"

namespace modrwkv::server {
namespace {

// Admission and the session id of a request: the owner and the id, or the error.
absl::StatusOr<std::pair<std::string, SessionId>> AdmitWithSession(
    ServingContext* ctx, grpc::CallbackServerContext* call, const std::string& session_id) {
  MODRWKV_ASSIGN_OR_RETURN(std::string owner, ctx->Admit(*call));
  MODRWKV_ASSIGN_OR_RETURN(SessionId id, ParseSessionId(session_id, "session_id"));
  return std::make_pair(std::move(owner), id);
}

// A unary command on one session: admission and the id, the session brought back from the shared
// tier if another replica handed it there, then `command(owner, id, finish)`, which ends the call
// by calling finish(status) once (from any thread).
template <typename Command>
grpc::ServerUnaryReactor* OnSession(ServingContext* ctx, grpc::CallbackServerContext* call,
                                    absl::string_view method, const std::string& session_id,
                                    Command command) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  auto admitted = AdmitWithSession(ctx, call, session_id);
  if (!admitted.ok()) {
    ctx->FinishUnary(call, reactor, method, "", admitted.status());
    return reactor;
  }
  const std::string owner = admitted->first;
  const SessionId id = admitted->second;
  auto finish = [=](const absl::Status& st) { ctx->FinishUnary(call, reactor, method, owner, st); };
  ctx->LocalizeSession(id, owner, [=](absl::Status st) {
    if (!st.ok()) return finish(st);
    command(owner, id, finish);
  });
  return reactor;
}

// Streams one exported blob in chunks; the first carries the header.
class ExportReactor final : public grpc::ServerWriteReactor<pb::SessionBlobChunk> {
 public:
  ExportReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                const pb::ExportSessionRequest* request)
      : ctx_(ctx), call_(call) {
    record_.method = "ExportSession";
    record_.request_id = ctx_->RequestId(*call_, "");
    record_.peer = call_->peer();
    auto admitted = AdmitWithSession(ctx_, call_, request->session_id());
    if (!admitted.ok()) {
      Done(admitted.status());
      return;
    }
    record_.owner = admitted->first;
    const SessionId id = admitted->second;
    ctx_->LocalizeSession(id, record_.owner, [this, id](absl::Status st) {
      if (!st.ok()) return OnBlob(st);
      ctx_->scheduler->ExportSession(
          id, record_.owner, [this](absl::StatusOr<std::string> blob) { OnBlob(std::move(blob)); });
    });
  }

 private:
  // Scheduler thread.
  void OnBlob(absl::StatusOr<std::string> blob) {
    bool cancelled;
    {
      std::lock_guard<std::mutex> l(mu_);
      cancelled = cancelled_;
      if (blob.ok()) blob_ = *std::move(blob);
    }
    if (cancelled) return Done(absl::CancelledError("cancelled"));
    if (!blob.ok()) return Done(blob.status());
    WriteNext();
  }

  void WriteNext() {
    if (offset_ >= blob_.size()) return Done(absl::OkStatus());
    chunk_.Clear();
    if (offset_ == 0) {
      absl::Status st = FillBlobHeader(blob_, chunk_.mutable_header());
      if (!st.ok()) return Done(absl::InternalError(absl::StrCat("exported ", st.message())));
    }
    const size_t n = std::min(kSessionChunkBytes, blob_.size() - offset_);
    chunk_.set_data(blob_.substr(offset_, n));
    offset_ += n;
    StartWrite(&chunk_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Done(absl::CancelledError("the client went away"));
    WriteNext();
  }

  // While the blob is being made OnBlob finishes the call; while writing, OnWriteDone(false).
  void OnCancel() override {
    std::lock_guard<std::mutex> l(mu_);
    cancelled_ = true;
  }

  void Done(const absl::Status& status) {
    const grpc::Status st = ToGrpcStatus(status);
    record_.code = st.error_code();
    record_.message = st.error_message();
    ctx_->RecordRpc(record_);
    Finish(st);
  }

  void OnDone() override { delete this; }

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  RpcRecord record_;
  std::mutex mu_;
  bool cancelled_ = false;
  std::string blob_;
  size_t offset_ = 0;
  pb::SessionBlobChunk chunk_;
};

// Collects a blob from the client's chunks (bounded by the blob size this model can have), then
// imports it.
class ImportReactor final : public grpc::ServerReadReactor<pb::SessionBlobChunk> {
 public:
  ImportReactor(ServingContext* ctx, grpc::CallbackServerContext* call, pb::Session* response)
      : ctx_(ctx), call_(call), response_(response) {
    record_.method = "ImportSession";
    record_.request_id = ctx_->RequestId(*call_, "");
    record_.peer = call_->peer();
    auto owner = ctx_->Admit(*call_);
    if (!owner.ok()) {
      Done(owner.status());
      return;
    }
    record_.owner = *owner;
    max_bytes_ = kStateBlobHeaderBytes + static_cast<size_t>(ctx_->model->StateBytes());
    StartRead(&chunk_);
  }

 private:
  void OnReadDone(bool ok) override {
    if (ok) {
      if (blob_.size() + chunk_.data().size() > max_bytes_) {
        return Done(InvalidField(
            "data", absl::StrFormat(
                        "data: the blob is larger than a session state of this model (%d bytes)",
                        max_bytes_)));
      }
      blob_.append(chunk_.data());
      StartRead(&chunk_);
      return;
    }
    if (call_->IsCancelled()) return Done(absl::CancelledError("cancelled"));
    if (blob_.empty()) return Done(InvalidField("data", "data: no blob was sent"));
    ctx_->scheduler->ImportSession(
        std::move(blob_), record_.owner, [this](absl::StatusOr<SessionInfo> info) {
          if (!info.ok()) return Done(info.status());
          FillSession(*info, response_);
          ctx_->PersistSession(info->id, record_.owner, [this](absl::Status st) { Done(st); });
        });
  }

  void Done(const absl::Status& status) {
    const grpc::Status st = ToGrpcStatus(status);
    record_.code = st.error_code();
    record_.message = st.error_message();
    ctx_->RecordRpc(record_);
    Finish(st);
  }

  void OnDone() override { delete this; }

  ServingContext* const ctx_;
  grpc::CallbackServerContext* const call_;
  pb::Session* const response_;
  RpcRecord record_;
  size_t max_bytes_ = 0;
  std::string blob_;
  pb::SessionBlobChunk chunk_;
};

}  // namespace

absl::Status FillBlobHeader(absl::string_view blob, pb::SessionBlobHeader* out) {
  MODRWKV_ASSIGN_OR_RETURN(StateBlobHeader h,
                           PeekStateBlobHeader(std::string_view(blob.data(), blob.size())));
  out->set_format_version(h.format_version);
  out->set_model_fingerprint(FingerprintHex(h.model_fingerprint));
  out->set_dtype("f32");  // the only dtype blobs are written in
  out->set_n_layer(h.n_layer);
  out->set_n_embd(h.n_embd);
  out->set_head_size(h.head_size);
  out->set_tokens(h.tokens);
  out->set_payload_crc32c(h.payload_crc32c);
  out->set_total_bytes(static_cast<int64_t>(blob.size()));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* SessionsService::CreateSession(grpc::CallbackServerContext* call,
                                                         const pb::CreateSessionRequest* request,
                                                         pb::Session* response) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  absl::StatusOr<std::string> owner = ctx_->Admit(*call);
  if (!owner.ok()) {
    ctx_->FinishUnary(call, reactor, "CreateSession", "", owner.status());
    return reactor;
  }
  absl::StatusOr<std::shared_ptr<const InitialState>> initial = ResolveInitialState(
      ctx_->translation, request->initial_state(), /*has_session=*/false, "initial_state");
  if (!initial.ok()) {
    ctx_->FinishUnary(call, reactor, "CreateSession", *owner, initial.status());
    return reactor;
  }
  ServingContext* ctx = ctx_;
  ctx_->scheduler->CreateSession(
      *owner,
      [=, owner = *owner](absl::StatusOr<SessionInfo> info) {
        auto finish = [=](const absl::Status& st) {
          ctx->FinishUnary(call, reactor, "CreateSession", owner, st);
        };
        if (!info.ok()) return finish(info.status());
        FillSession(*info, response);
        ctx->PersistSession(info->id, owner, finish);
      },
      *std::move(initial));
  return reactor;
}

grpc::ServerUnaryReactor* SessionsService::GetSession(grpc::CallbackServerContext* call,
                                                      const pb::GetSessionRequest* request,
                                                      pb::Session* response) {
  return OnSession(ctx_, call, "GetSession", request->session_id(),
                   [ctx = ctx_, response](const std::string& owner, SessionId id, auto finish) {
                     ctx->scheduler->GetSession(id, owner, [=](absl::StatusOr<SessionInfo> info) {
                       if (info.ok()) FillSession(*info, response);
                       finish(info.status());
                     });
                   });
}

grpc::ServerUnaryReactor* SessionsService::DeleteSession(grpc::CallbackServerContext* call,
                                                         const pb::DeleteSessionRequest* request,
                                                         pb::DeleteSessionResponse*) {
  return OnSession(ctx_, call, "DeleteSession", request->session_id(),
                   [ctx = ctx_](const std::string& owner, SessionId id, auto finish) {
                     ctx->scheduler->DeleteSession(id, owner, [=](absl::Status st) {
                       if (st.ok()) ctx->ForgetSession(id, owner);
                       finish(st);
                     });
                   });
}

grpc::ServerUnaryReactor* SessionsService::ForkSession(grpc::CallbackServerContext* call,
                                                       const pb::ForkSessionRequest* request,
                                                       pb::Session* response) {
  return OnSession(ctx_, call, "ForkSession", request->session_id(),
                   [ctx = ctx_, response](const std::string& owner, SessionId id, auto finish) {
                     ctx->scheduler->ForkSession(id, owner, [=](absl::StatusOr<SessionInfo> info) {
                       if (!info.ok()) return finish(info.status());
                       FillSession(*info, response);
                       ctx->PersistSession(info->id, owner, finish);
                     });
                   });
}

grpc::ServerWriteReactor<pb::SessionBlobChunk>* SessionsService::ExportSession(
    grpc::CallbackServerContext* call, const pb::ExportSessionRequest* request) {
  return new ExportReactor(ctx_, call, request);
}

grpc::ServerReadReactor<pb::SessionBlobChunk>* SessionsService::ImportSession(
    grpc::CallbackServerContext* call, pb::Session* response) {
  return new ImportReactor(ctx_, call, response);
}

}  // namespace modrwkv::server
