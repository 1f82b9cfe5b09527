#include "tools/cli/flags.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace modrwkv::cli {

Flags::Flags(std::string command, std::string usage_line, std::string description)
    : command_(std::move(command)),
      usage_line_(std::move(usage_line)),
      description_(std::move(description)) {}

Flags& Flags::Add(const std::string& name, const std::string& def, const std::string& help,
                  bool required) {
  defs_[name] = Def{def, help, required, false};
  order_.push_back(name);
  return *this;
}

Flags& Flags::AddBool(const std::string& name, const std::string& help) {
  defs_[name] = Def{"", help, false, true};
  order_.push_back(name);
  return *this;
}

Flags& Flags::AddNegatableBool(const std::string& name, bool def, const std::string& help) {
  defs_[name] = Def{def ? "true" : "false", help, false, true, true};
  order_.push_back(name);
  return *this;
}

std::string Flags::Usage() const {
  // Subcommands print as "modrwkv <command>"; standalone tools pass their binary name.
  const std::string prog =
      command_.rfind("modrwkv-", 0) == 0 ? command_ : absl::StrCat("modrwkv ", command_);
  std::string s =
      absl::StrCat("usage: ", prog, " ", usage_line_, "\n\n", description_, "\n\nflags:\n");
  for (const std::string& n : order_) {
    const Def& d = defs_.at(n);
    std::string left = absl::StrCat("  --", d.negatable ? "[no-]" : "", n, d.is_bool ? "" : " V");
    absl::StrAppend(&s, absl::StrFormat("%-26s %s", left, d.help));
    if (d.required) absl::StrAppend(&s, " (required)");
    if (!d.def.empty()) absl::StrAppend(&s, " [default: ", d.def, "]");
    absl::StrAppend(&s, "\n");
  }
  absl::StrAppend(&s, "  --help                     show this help\n");
  return s;
}

absl::StatusOr<bool> Flags::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Usage().c_str(), stdout);
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = defs_.find(name);
    if (it == defs_.end() && name.rfind("no-", 0) == 0 && !has_value) {
      auto base = defs_.find(name.substr(3));
      if (base != defs_.end() && base->second.negatable) {
        values_[base->first] = "false";
        continue;
      }
    }
    if (it == defs_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " for '", command_, "' (see --help)"));
    }
    if (it->second.is_bool) {
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    values_[name] = value;
    all_values_[name].push_back(value);
  }
  for (const auto& [name, d] : defs_) {
    if (d.required && !values_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("missing required flag --", name));
    }
  }
  return true;
}

bool Flags::Has(const std::string& name) const {
  return values_.count(name) || !defs_.at(name).def.empty();
}

std::string Flags::Str(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() ? it->second : defs_.at(name).def;
}

bool Flags::Bool(const std::string& name) const {
  const std::string v = Str(name);
  return v == "true" || v == "1" || v == "yes";
}

absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t lo, int64_t hi) const {
  int64_t v;
  if (!absl::SimpleAtoi(Str(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", Str(name), "'"));
  }
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be in [%d, %d], got %d", name, lo, hi, v));
  }
  return v;
}

absl::StatusOr<double> Flags::Float(const std::string& name, double lo, double hi) const {
  double v;
  if (!absl::SimpleAtod(Str(name), &v) || std::isnan(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number, got '", Str(name), "'"));
  }
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be in [%g, %g], got %g", name, lo, hi, v));
  }
  return v;
}

std::vector<std::string> Flags::List(const std::string& name) const {
  return absl::StrSplit(Str(name), absl::ByAnyChar(", "), absl::SkipEmpty());
}

}  // namespace modrwkv::cli

namespace modrwkv::cli {

std::vector<std::string> Flags::All(const std::string& name) const {
  auto it = all_values_.find(name);
  return it == all_values_.end() ? std::vector<std::string>{} : it->second;
}

}  // namespace modrwkv::cli
