// Structured logs to stderr: one line per event, key=value pairs (logfmt) or one JSON object.
// Thread-safe; lines are never interleaved. Lines are formatted by the caller and written by a
// background thread, so a slow stderr (a stalled log pipe) never blocks the scheduler thread or a
// gRPC callback; if more than kMaxQueuedLines wait, new lines are dropped and counted.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "server/server_options.h"

namespace modrwkv::server {

class Logger {
 public:
  struct Field {
    std::string key, value;
    bool quoted = true;  // JSON: a string; false for numbers and booleans
    Field(absl::string_view k, absl::string_view v) : key(k), value(v) {}
    Field(absl::string_view k, const char* v) : key(k), value(v) {}
    Field(absl::string_view k, const std::string& v) : key(k), value(v) {}
    Field(absl::string_view k, int64_t v) : key(k), value(std::to_string(v)), quoted(false) {}
    Field(absl::string_view k, int v) : key(k), value(std::to_string(v)), quoted(false) {}
    Field(absl::string_view k, double v);
    Field(absl::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  };

  static constexpr size_t kMaxQueuedLines = 10000;

  Logger(LogLevel level, LogFormat format, FILE* out = stderr);
  ~Logger();  // writes what is queued, then stops the writer thread
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  bool Enabled(LogLevel level) const { return level >= level_; }
  void Log(LogLevel level, absl::string_view msg, std::initializer_list<Field> fields = {});
  void Log(LogLevel level, absl::string_view msg, const std::vector<Field>& fields);

  void Info(absl::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kInfo, msg, fields);
  }
  void Warn(absl::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kWarn, msg, fields);
  }
  void Error(absl::string_view msg, std::initializer_list<Field> fields = {}) {
    Log(LogLevel::kError, msg, fields);
  }

  // The line Log would write (without the trailing newline); for tests.
  std::string Format(LogLevel level, absl::string_view msg, const std::vector<Field>& fields) const;

 private:
  void WriterLoop();

  const LogLevel level_;
  const LogFormat format_;
  FILE* const out_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;  // under mu_
  uint64_t dropped_ = 0;           // under mu_
  bool stop_ = false;              // under mu_
  std::thread writer_;
};

}  // namespace modrwkv::server
