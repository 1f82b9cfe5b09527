// Structured logs to stderr: one line per event, key=value pairs (logfmt) or one JSON object.
// Thread-safe; lines are never interleaved.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/server_options.h"

namespace modrwkv::server {

class Logger {
 public:
  struct Field {
    std::string key, value;
    bool quoted = true;  // JSON: a string; false for numbers and booleans
    Field(std::string_view k, std::string_view v) : key(k), value(v) {}
    Field(std::string_view k, const char* v) : key(k), value(v) {}
    Field(std::string_view k, const std::string& v) : key(k), value(v) {}
    Field(std::string_view k, int64_t v) : key(k), value(std::to_string(v)), quoted(false) {}
    Field(std::string_view k, int v) : key(k), value(std::to_string(v)), quoted(false) {}
    Field(std::string_view k, double v);
    Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  };

  Logger(LogLevel level, LogFormat format, FILE* out = stderr)
      : level_(level), format_(format), out_(out) {}

  bool Enabled(LogLevel level) const { return level >= level_; }
  void Log(LogLevel level, std::string_view msg, std::initializer_list<Field> fields = {});
  void Log(LogLevel level, std::string_view msg, const std::vector<Field>& fields);

  void Info(std::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kInfo, msg, fields);
  }
  void Warn(std::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kWarn, msg, fields);
  }
  void Error(std::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kError, msg, fields);
  }

  // The line Log would write (without the trailing newline); for tests.
  std::string Format(LogLevel level, std::string_view msg, const std::vector<Field>& fields) const;

 private:
  const LogLevel level_;
  const LogFormat format_;
  FILE* const out_;
  std::mutex mu_;
};

}  // namespace modrwkv::server
