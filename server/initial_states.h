// The trained initial states a server offers (--initial-state NAME=PATH, and a state the model
// checkpoint carries), by name, and the one fresh requests start from when they name none.
// Built once at start-up; immutable and thread-safe after.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/initial_state.h"

namespace modrwkv::server {

class InitialStates {
 public:
  // What a request names to start from the zero state when the server has a default.
  static constexpr const char* kNone = "none";
  // The name of the state a model checkpoint carries (RWKV-PEFT's merge_state.py output).
  static constexpr const char* kModel = "model";

  // `states` by name (names: letters, digits, '-', '_', '.', at most 64; not "none"; unique).
  // `default_name`: "" = the model's state if `states` has one under kModel, else none; "none";
  // or one of the names. INVALID_ARGUMENT naming the flag otherwise.
  static absl::StatusOr<InitialStates> Create(
      std::vector<std::shared_ptr<const InitialState>> states, const std::string& default_name);

  // The state a request's `initial_state` field names: "" = the default, kNone = the zero
  // state (nullptr), else that state. With a session (`has_session`) only "" is accepted and
  // means the session's own state (nullptr). INVALID_ARGUMENT naming `field` otherwise.
  absl::StatusOr<std::shared_ptr<const InitialState>> Resolve(const std::string& name,
                                                              bool has_session,
                                                              const std::string& field) const;

  std::vector<std::string> names() const;                            // sorted
  const std::string& default_name() const { return default_name_; }  // "" = the zero state

 private:
  std::string NamesOrNone() const;  // for errors

  std::map<std::string, std::shared_ptr<const InitialState>> by_name_;
  std::string default_name_;
};

}  // namespace modrwkv::server
