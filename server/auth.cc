#include "server/auth.h"

#include <openssl/evp.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/base/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {
namespace {

// Compares in time that depends only on the lengths, so response timing does not leak how much
// of a guessed token matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::Status Unauthenticated(absl::string_view message) {
  return WithReason(absl::UnauthenticatedError(message), "UNAUTHENTICATED");
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open auth token file ", path));
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

std::vector<std::string> Values(const grpc::AuthContext& context, const char* property) {
  std::vector<std::string> out;
  for (const grpc::string_ref& v : context.FindPropertyValues(property)) {
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

// Whether `word` is one of CallerLimits' "key=value" settings; if so, stores it (an error names
// the line when the value is out of range or the key is given twice).
absl::StatusOr<bool> ParseLimit(absl::string_view word, int line_no, CallerLimits* limits) {
  struct Key {
    absl::string_view name;
    std::optional<int> CallerLimits::*field;
    int max;
  };
  static constexpr Key kKeys[] = {{"max-priority", &CallerLimits::max_priority, 100},
                                  {"max-requests", &CallerLimits::max_requests, 1 << 20},
                                  {"max-chat-streams", &CallerLimits::max_chat_streams, 1 << 20},
                                  {"max-sessions", &CallerLimits::max_sessions, 1 << 24}};
  for (const Key& key : kKeys) {
    absl::string_view text = word;
    if (!absl::ConsumePrefix(&text, key.name) || !absl::ConsumePrefix(&text, "=")) continue;
    int value = 0;
    if (!absl::SimpleAtoi(text, &value) || value < 0 || value > key.max) {
      return absl::InvalidArgumentError(absl::StrCat("auth token file line ", line_no, ": ",
                                                     key.name, " must be an integer in [0, ",
                                                     key.max, "]"));
    }
    if ((limits->*key.field).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth token file line ", line_no, ": ", key.name, " given twice"));
    }
    limits->*key.field = value;
    return true;
  }
  return false;
}

}  // namespace

std::string TokenDigestIdentity(std::string_view token) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), md, &len, EVP_sha256(), nullptr) != 1 || len < 8) {
    return "token:unhashable";  // libcrypto without SHA-256; never seen on a working system
  }
  return absl::StrCat(
      "token:", absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), 8)));
}

std::string CertificateIdentity(const PeerCertificateNames& names) {
  for (const std::vector<std::string>* v : {&names.uri, &names.dns, &names.common_name}) {
    for (const std::string& name : *v) {
      if (!name.empty()) return absl::StrCat("cert:", name);
    }
  }
  return "";
}

PeerCertificateNames CertificateNamesOf(const grpc::AuthContext& context) {
  PeerCertificateNames names;
  names.uri = Values(context, "peer_uri");  // GRPC_PEER_URI_PROPERTY_NAME
  names.dns = Values(context, "peer_dns");  // GRPC_PEER_DNS_PROPERTY_NAME
  names.common_name = Values(context, "x509_common_name");
  return names;
}

std::unique_ptr<Authenticator> Authenticator::Disabled(bool client_certificates) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  a->client_certificates_ = client_certificates;
  a->table_ = std::make_shared<const Table>();
  return a;
}

absl::StatusOr<std::shared_ptr<const Authenticator::Table>> Authenticator::Parse(
    absl::string_view text) {
  auto table = std::make_shared<Table>();
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    Entry e;
    // The limits are the trailing words that name one; what is before them is the token (and
    // the name). A word after the token that names none is an error, not a third field.
    while (parts.size() > 1) {
      MODRWKV_ASSIGN_OR_RETURN(bool limit, ParseLimit(parts.back(), line_no, &e.limits));
      if (!limit) break;
      parts.pop_back();
    }
    if (parts.size() == 1) {
      e.token = std::string(parts[0]);
      e.name = TokenDigestIdentity(e.token);
    } else if (parts.size() == 2) {
      e.name = std::string(parts[0]);
      e.token = std::string(parts[1]);
      if (absl::StrContains(e.name, ':')) {
        return absl::InvalidArgumentError(absl::StrCat(
            "auth token file line ", line_no,
            ": a name must not contain ':' (reserved for token: and cert: identities)"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("auth token file line ", line_no,
                       ": expected \"token\" or \"name token\", then limits (max-priority=N, "
                       "max-requests=N, max-chat-streams=N, max-sessions=N); got ",
                       parts.size(), " words before them"));
    }
    if (e.token.size() < 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth token file line ", line_no, ": token is shorter than 8 characters"));
    }
    for (const Entry& other : *table) {
      if (other.name == e.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("auth token file line ", line_no, ": duplicate name '", e.name, "'"));
      }
      if (other.token == e.token) {
        return absl::InvalidArgumentError(
            absl::StrCat("auth token file line ", line_no, ": the token appears twice"));
      }
    }
    table->push_back(std::move(e));
  }
  if (table->empty()) return absl::InvalidArgumentError("auth token file has no tokens");
  return std::shared_ptr<const Table>(std::move(table));
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromString(absl::string_view text) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  a->enabled_ = true;
  MODRWKV_ASSIGN_OR_RETURN(a->table_, Parse(text));
  return a;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromFile(const std::string& path) {
  MODRWKV_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<Authenticator> a, FromString(text));
  a->path_ = path;
  return a;
}

std::shared_ptr<const Authenticator::Table> Authenticator::table() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_;
}

size_t Authenticator::num_tokens() const { return table()->size(); }

absl::Status Authenticator::ReloadFromString(absl::string_view text) {
  if (!enabled_) return absl::FailedPreconditionError("no auth token file is configured");
  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<const Table> fresh, Parse(text));
  std::lock_guard<std::mutex> l(mu_);
  table_ = std::move(fresh);
  return absl::OkStatus();
}

absl::Status Authenticator::Reload() {
  if (path_.empty()) return absl::FailedPreconditionError("no auth token file is configured");
  MODRWKV_ASSIGN_OR_RETURN(std::string text, ReadFile(path_));
  return ReloadFromString(text);
}

absl::StatusOr<std::string> Authenticator::IdentifyHeader(absl::string_view authorization) const {
  if (!enabled_) return std::string();
  if (authorization.empty()) {
    return Unauthenticated("missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view header(authorization.data(), authorization.size());
  constexpr absl::string_view kBearer = "bearer ";
  if (header.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(header.substr(0, kBearer.size()), kBearer)) {
    return Unauthenticated("authorization metadata must be 'Bearer <token>'");
  }
  const absl::string_view stripped = absl::StripAsciiWhitespace(header.substr(kBearer.size()));
  const absl::string_view token(stripped.data(), stripped.size());
  const std::shared_ptr<const Table> t = table();
  const Entry* found = nullptr;
  for (const Entry& e : *t) {
    if (ConstantTimeEquals(e.token, token)) found = &e;  // no early exit
  }
  if (!found) return Unauthenticated("invalid bearer token");
  return found->name;
}

CallerLimits Authenticator::LimitsOf(std::string_view identity) const {
  const std::shared_ptr<const Table> t = table();
  for (const Entry& e : *t) {
    if (e.name == identity) return e.limits;
  }
  return {};
}

absl::StatusOr<std::string> Authenticator::Identify(const grpc::ServerContextBase& context) const {
  if (enabled_) {
    const auto& md = context.client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) return IdentifyHeader("");
    return IdentifyHeader(absl::string_view(it->second.data(), it->second.size()));
  }
  if (!client_certificates_) return std::string();
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  std::string id = auth ? CertificateIdentity(CertificateNamesOf(*auth)) : "";
  if (id.empty()) {
    return Unauthenticated("the client certificate names no identity (no SAN URI or DNS, no CN)");
  }
  return id;
}

}  // namespace modrwkv::server
