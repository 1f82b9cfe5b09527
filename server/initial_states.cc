#include "server/initial_states.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/errors.h"

namespace modrwkv::server {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<InitialStates> InitialStates::Create(
    std::vector<std::shared_ptr<const InitialState>> states, const std::string& default_name) {
  InitialStates out;
  for (auto& s : states) {
    if (!ValidName(s->name) || s->name == kNone) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial-state: '", s->name,
          "' is not a state name (1-64 letters, digits, '-', '_', '.'; not \"none\")"));
    }
    const std::string name = s->name;
    if (!out.by_name_.emplace(name, std::move(s)).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial-state: two states are called '", name, "'",
          name == kModel ? " (the model checkpoint carries a state of that name)" : ""));
    }
  }
  if (default_name.empty()) {
    if (out.by_name_.count(kModel)) out.default_name_ = kModel;
  } else if (default_name != kNone) {
    if (!out.by_name_.count(default_name)) {
      return absl::InvalidArgumentError(absl::StrCat("default-initial-state: no state called '",
                                                     default_name, "' (states: ", out.NamesOrNone(),
                                                     ")"));
    }
    out.default_name_ = default_name;
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const InitialState>> InitialStates::Resolve(
    const std::string& name, bool has_session, const std::string& field) const {
  if (has_session) {
    if (name.empty()) return nullptr;
    return InvalidFieldError(
        field, absl::StrCat(field, ": a session continues its own state (name the state when ",
                            "the session is created)"));
  }
  if (name.size() > 64) {
    return InvalidFieldError(
        field, absl::StrCat(field, ": ", name.size(), " bytes; state names are at most 64"));
  }
  const std::string& wanted = name.empty() ? default_name_ : name;
  if (wanted.empty() || wanted == kNone) return nullptr;
  auto it = by_name_.find(wanted);
  if (it == by_name_.end()) {
    return InvalidFieldError(field, absl::StrCat(field, ": no state called '", wanted,
                                                 "' (states: ", NamesOrNone(), ")"));
  }
  return it->second;
}

std::vector<std::string> InitialStates::names() const {
  std::vector<std::string> out;
  for (const auto& [name, state] : by_name_) out.push_back(name);
  return out;
}

std::string InitialStates::NamesOrNone() const {
  return by_name_.empty() ? "none; serve some with --initial-state NAME=PATH"
                          : absl::StrJoin(names(), ", ");
}

}  // namespace modrwkv::server
