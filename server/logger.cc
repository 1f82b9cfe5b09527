#include "server/logger.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace modrwkv::server {
namespace {

std::string_view LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
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
void AppendLogfmtValue(std::string_view s, std::string* out) {
  bool bare = !s.empty();
  for (unsigned char c : s) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) bare = false;
  }
  if (bare) {
    out->append(s);
  } else {
    AppendJsonString(s, out);
  }
}

}  // namespace

Logger::Field::Field(std::string_view k, double v)
    : key(k), value(absl::StrFormat("%.6g", v)), quoted(false) {}

std::string Logger::Format(LogLevel level, std::string_view msg,
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

void Logger::Log(LogLevel level, std::string_view msg, std::initializer_list<Field> fields) {
  if (!Enabled(level)) return;
  Log(level, msg, std::vector<Field>(fields));
}

void Logger::Log(LogLevel level, std::string_view msg, const std::vector<Field>& fields) {
  if (!Enabled(level)) return;
  std::string line = Format(level, msg, fields);
  line.push_back('\n');
  std::lock_guard<std::mutex> l(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace modrwkv::server
