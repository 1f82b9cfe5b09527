// Caller identities. Bearer tokens come from metadata ("authorization: Bearer <token>") checked
// against a file, one per line: "token" or "name token", then optionally the caller's own limits
// as "key=value" words (CallerLimits; '#' starts a comment). A named token's
// identity is its name; a bare token's is "token:" + the first 16 hex digits of its SHA-256, so
// identities (which own sessions) survive edits of the file. Without a token file, a verified
// client certificate (mTLS) names the caller: "cert:" + its first SAN URI, else its first SAN DNS
// name, else its subject CN. With both, the token decides the identity and the certificate only
// admits the connection. The token table is swapped atomically on Reload (SIGHUP).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/server_context.h"

namespace modrwkv::server {

// A caller's own limits, from its token file line; unset ones are the server's flags.
//   max-priority=N      the highest `priority` it may ask for, 0..100 (--max-request-priority)
//   max-requests=N      its requests in flight, 0 = unbounded (--max-requests-per-owner)
//   max-chat-streams=N  its open Chat streams, 0 = unbounded (--max-chat-streams-per-owner)
//   max-sessions=N      the sessions it may hold, 0 = unbounded (--max-sessions-per-owner)
struct CallerLimits {
  std::optional<int> max_priority, max_requests, max_chat_streams, max_sessions;
};

// The names a verified client certificate carries (grpc's AuthContext peer properties).
struct PeerCertificateNames {
  std::vector<std::string> uri, dns, common_name;
};
// "cert:<name>" by the rule above, or "" when the certificate names nothing usable.
std::string CertificateIdentity(const PeerCertificateNames& names);
PeerCertificateNames CertificateNamesOf(const grpc::AuthContext& context);

// "token:" + the first 16 hex digits of SHA-256(token).
std::string TokenDigestIdentity(std::string_view token);

class Authenticator {
 public:
  // No file: no bearer tokens. `client_certificates`: callers are named by their certificates.
  static std::unique_ptr<Authenticator> Disabled(bool client_certificates = false);
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromString(absl::string_view text);

  bool enabled() const { return enabled_; }  // bearer tokens required
  bool client_certificates() const { return client_certificates_; }
  size_t num_tokens() const;

  // Rereads the file FromFile was given (or parses `text`) and swaps the table in atomically;
  // calls in progress finish with the old one. On error the old table stays and the error (which
  // names the line) is returned. Thread-safe.
  absl::Status Reload();
  absl::Status ReloadFromString(absl::string_view text);

  // The caller's identity, or UNAUTHENTICATED (the message says what is missing or wrong, never
  // echoes the token). Thread-safe.
  absl::StatusOr<std::string> Identify(const grpc::ServerContextBase& context) const;
  absl::StatusOr<std::string> IdentifyHeader(absl::string_view authorization) const;
  // The limits the current table gives `identity` (none for an identity it does not name: a
  // certificate's, or a token removed since). Thread-safe.
  CallerLimits LimitsOf(std::string_view identity) const;

 private:
  struct Entry {
    std::string name, token;
    CallerLimits limits;
  };
  using Table = std::vector<Entry>;
  Authenticator() = default;
  static absl::StatusOr<std::shared_ptr<const Table>> Parse(absl::string_view text);
  std::shared_ptr<const Table> table() const;

  bool enabled_ = false;
  bool client_certificates_ = false;
  std::string path_;
  mutable std::mutex mu_;  // guards table_ (the pointer; tables are immutable)
  std::shared_ptr<const Table> table_;
};

}  // namespace modrwkv::server
