// A small per-subcommand flag parser: `--name value`, `--name=value`, `--flag` for booleans,
// `--help`. Unknown flags and malformed values are errors that name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::cli {

class Flags {
 public:
  Flags(std::string command, std::string usage_line, std::string description);

  // Declares a flag. `def` empty with required=false means "unset".
  Flags& Add(const std::string& name, const std::string& def, const std::string& help,
             bool required = false);
  Flags& AddBool(const std::string& name, const std::string& help);
  // A boolean that is on unless --no-<name> is given (or --<name>=false); the last one wins.
  Flags& AddNegatableBool(const std::string& name, bool def, const std::string& help);

  // Parses argv[first..]. Returns false and prints usage if --help was given.
  absl::StatusOr<bool> Parse(int argc, char** argv, int first);

  bool Has(const std::string& name) const;  // given on the command line or has a default
  bool Given(const std::string& name) const { return values_.count(name) > 0; }
  std::string Str(const std::string& name) const;
  bool Bool(const std::string& name) const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t lo, int64_t hi) const;
  absl::StatusOr<double> Float(const std::string& name, double lo, double hi) const;
  // Comma- or space-separated list.
  std::vector<std::string> List(const std::string& name) const;
  // Every value given for a flag that may repeat (in order).
  std::vector<std::string> All(const std::string& name) const;

  std::string Usage() const;

 private:
  struct Def {
    std::string def, help;
    bool required = false, is_bool = false, negatable = false;
  };
  std::string command_, usage_line_, description_;
  std::map<std::string, Def> defs_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
};

}  // namespace modrwkv::cli
