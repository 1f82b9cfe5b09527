// Bearer-token authentication from call metadata ("authorization: Bearer <token>"). The tokens come
// from a file, one per line: "token" or "name token" ('#' starts a comment). The caller identity a
// token maps to (its name, or "token-<line>") owns the sessions that caller creates.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"

namespace modrwkv::server {

class Authenticator {
 public:
  // No file: authentication off; every caller is identity "".
  static std::unique_ptr<Authenticator> Disabled();
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromString(absl::string_view text);

  bool enabled() const { return enabled_; }
  size_t num_tokens() const { return tokens_.size(); }

  // The caller's identity, or UNAUTHENTICATED (the message says what is missing or wrong, never
  // echoes the token). Thread-safe.
  absl::StatusOr<std::string> Identify(const grpc::ServerContextBase& context) const;
  absl::StatusOr<std::string> IdentifyHeader(absl::string_view authorization) const;

 private:
  struct Entry {
    std::string name, token;
  };
  Authenticator() = default;
  bool enabled_ = false;
  std::vector<Entry> tokens_;
};

}  // namespace modrwkv::server
