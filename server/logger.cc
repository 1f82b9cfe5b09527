#include "server/logger.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace modrwkv::server {
namespace {

absl::string_view LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// logfmt: bare when the value has no space, quote, '=' or control byte; else a quoted string.
void AppendLogfmtValue(absl::string_view s, std::string* out) {
  bool bare = !s.empty();
  for (unsigned char c : s) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) bare = false;
  }
  if (bare) {
    out->append(s.data(), s.size());
  } else {
    AppendJsonString(s, out);
  }
}

}  // namespace

Logger::Field::Field(absl::string_view k, double v)
    : key(k), value(absl::StrFormat("%.6g", v)), quoted(false) {}

std::string Logger::Format(LogLevel level, absl::string_view msg,
                           const std::vector<Field>& fields) const {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (format_ == LogFormat::kJson) {
    absl::StrAppend(&line, "{\"ts\":\"", ts, "\",\"level\":\"", LevelName(level), "\",\"msg\":");
    AppendJsonString(msg, &line);
    for (const Field& f : fields) {
      line.push_back(',');
      AppendJsonString(f.key, &line);
      line.push_back(':');
      if (f.quoted) {
        AppendJsonString(f.value, &line);
      } else {
        line.append(f.value);
      }
    }
    line.push_back('}');
  } else {
    absl::StrAppend(&line, "ts=", ts, " level=", LevelName(level), " msg=");
    AppendLogfmtValue(msg, &line);
    for (const Field& f : fields) {
      absl::StrAppend(&line, " ", f.key, "=");
      AppendLogfmtValue(f.value, &line);
    }
  }
  return line;
}

void Logger::Log(LogLevel level, absl::string_view msg, std::initializer_list<Field> fields) {
  if (!Enabled(level)) return;
  Log(level, msg, std::vector<Field>(fields));
}

void Logger::Log(LogLevel level, absl::string_view msg, const std::vector<Field>& fields) {
  if (!Enabled(level)) return;
  std::string line = Format(level, msg, fields);
  line.push_back('\n');
  {
    std::lock_guard<std::mutex> l(mu_);
    if (queue_.size() >= kMaxQueuedLines) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(line));
  }
  cv_.notify_one();
}

Logger::Logger(LogLevel level, LogFormat format, FILE* out)
    : level_(level), format_(format), out_(out), writer_([this] { WriterLoop(); }) {}

Logger::~Logger() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  writer_.join();
}

void Logger::WriterLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty() || dropped_ > 0; });
    std::deque<std::string> batch;
    batch.swap(queue_);
    const uint64_t dropped = dropped_;
    dropped_ = 0;
    const bool stop = stop_;
    l.unlock();
    for (const std::string& line : batch) std::fwrite(line.data(), 1, line.size(), out_);
    if (dropped > 0) {
      const std::string note = Format(LogLevel::kWarn, "log lines dropped (stderr too slow)",
                                      {Field("count", static_cast<int64_t>(dropped))}) +
                               "\n";
      std::fwrite(note.data(), 1, note.size(), out_);
    }
    std::fflush(out_);
    l.lock();
    if (stop && queue_.empty()) return;
  }
}

}  // namespace modrwkv::server
