#include "server/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

}  // namespace

std::unique_ptr<Authenticator> Authenticator::Disabled() {
  return std::unique_ptr<Authenticator>(new Authenticator());
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromString(absl::string_view text) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  a->enabled_ = true;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    Entry e;
    if (parts.size() == 1) {
      e.name = absl::StrCat("token-", line_no);
      e.token = std::string(parts[0]);
    } else if (parts.size() == 2) {
      e.name = std::string(parts[0]);
      e.token = std::string(parts[1]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("auth token file line ", line_no,
                                                     ": expected \"token\" or \"name token\", got ",
                                                     parts.size(), " words"));
    }
    if (e.token.size() < 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth token file line ", line_no, ": token is shorter than 8 characters"));
    }
    for (const Entry& other : a->tokens_) {
      if (other.name == e.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("auth token file line ", line_no, ": duplicate name '", e.name, "'"));
      }
    }
    a->tokens_.push_back(std::move(e));
  }
  if (a->tokens_.empty()) return absl::InvalidArgumentError("auth token file has no tokens");
  return a;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open auth token file ", path));
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return FromString(text);
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
  const Entry* found = nullptr;
  for (const Entry& e : tokens_) {
    if (ConstantTimeEquals(e.token, token)) found = &e;  // no early exit
  }
  if (!found) return Unauthenticated("invalid bearer token");
  return found->name;
}

absl::StatusOr<std::string> Authenticator::Identify(const grpc::ServerContextBase& context) const {
  if (!enabled_) return std::string();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return IdentifyHeader("");
  return IdentifyHeader(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace modrwkv::server
