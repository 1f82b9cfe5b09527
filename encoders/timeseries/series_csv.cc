// CSV reading and writing for time series (rules in series_csv.h).
#include "encoders/timeseries/series_csv.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv::encoders {
namespace {

// ---------------------------------------------------------------------------------------------
// Records (RFC 4180)

struct Record {
  int line = 0;  // physical line (1-based) where the record starts
  std::vector<std::string> fields;
  std::vector<bool> quoted;  // [fields]: the field was a quoted one
};

absl::string_view Trim(absl::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsBlank(const Record& r) {
  return r.fields.size() == 1 && !r.quoted[0] && Trim(r.fields[0]).empty();
}

absl::Status Bad(absl::string_view field, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": line ", line, ": ", what));
}

absl::Status Tokenize(std::string_view text, absl::string_view field, std::vector<Record>* out) {
  size_t i = 0;
  const size_t n = text.size();
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // UTF-8 byte order mark
  int line = 1;
  Record rec;
  rec.line = line;
  std::string cur;
  bool cur_quoted = false;
  bool field_start = true;
  auto end_field = [&] {
    rec.fields.push_back(std::move(cur));
    rec.quoted.push_back(cur_quoted);
    cur.clear();
    cur_quoted = false;
  };
  while (i < n) {
    const char c = text[i];
    if (field_start && c == '"') {
      const int open_line = line;
      const size_t column = rec.fields.size() + 1;
      cur_quoted = true;
      field_start = false;
      bool closed = false;
      for (++i; i < n; ++i) {
        const char q = text[i];
        if (q == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            cur.push_back('"');
            ++i;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        // A line break inside a quoted field: CRLF counts once (at the LF).
        if (q == '\n' || (q == '\r' && (i + 1 >= n || text[i + 1] != '\n'))) ++line;
        cur.push_back(q);
      }
      if (!closed) {
        return Bad(field, open_line,
                   absl::StrCat("column ", column, ": a quoted field is not closed"));
      }
      if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
        return Bad(field, line,
                   absl::StrCat("column ", column,
                                ": text after the closing quote of a quoted field (a quote "
                                "inside a quoted field is written \"\")"));
      }
      continue;
    }
    field_start = false;
    if (c == ',') {
      end_field();
      field_start = true;
      ++i;
      continue;
    }
    if (c == '\n' || c == '\r') {
      end_field();
      out->push_back(std::move(rec));
      rec = Record();
      if (c == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++i;
      rec.line = ++line;
      field_start = true;
      continue;
    }
    cur.push_back(c);
    ++i;
  }
  if (!field_start || !rec.fields.empty()) {  // a last record without a line break
    end_field();
    out->push_back(std::move(rec));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Values

enum class Num { kOk, kEmpty, kNotNumber, kNonFinite, kOutOfRange };

// As Python's float(s) then float32: optional sign, decimal or exponent form, nan / inf words.
Num ParseNumber(absl::string_view raw, float* out) {
  absl::string_view s = Trim(raw);
  if (s.empty()) return Num::kEmpty;
  absl::string_view body = s;
  if (body.front() == '+') {
    body.remove_prefix(1);
    if (body.empty() || body.front() == '+' || body.front() == '-') return Num::kNotNumber;
  }
  double d = 0;
  const char* end = body.data() + body.size();
  std::from_chars_result r = std::from_chars(body.data(), end, d, std::chars_format::general);
  if (r.ptr != end) return Num::kNotNumber;
  if (r.ec == std::errc::result_out_of_range) {
    // Overflow or underflow: strtod tells which (HUGE_VAL vs a tiny value), as Python's float().
    const std::string copy(body);
    d = std::strtod(copy.c_str(), nullptr);
  } else if (r.ec != std::errc()) {
    return Num::kNotNumber;
  }
  if (std::isnan(d)) return Num::kNonFinite;
  if (std::isinf(d)) {
    // "inf" written as such is not a value; 1e400 is a value out of range.
    const std::string lower = absl::AsciiStrToLower(body);
    return lower.find("inf") != std::string::npos ? Num::kNonFinite : Num::kOutOfRange;
  }
  const float f = static_cast<float>(d);
  if (!std::isfinite(f)) return Num::kOutOfRange;
  *out = f;
  return Num::kOk;
}

// The field's text for an error message, cut to a readable length.
std::string Shown(absl::string_view s) {
  constexpr size_t kMax = 40;
  if (s.size() <= kMax) return absl::StrCat("\"", s, "\"");
  return absl::StrCat("\"", s.substr(0, kMax), "...\"");
}

bool IsTimestampName(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(Trim(name));
  for (const char* n : {"time", "timestamp", "date", "datetime", "ds"}) {
    if (lower == n) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Writing

// A field as RFC 4180 writes it; empty fields are quoted too, so that a header of one empty name
// is not a blank line, and so is a field starting with a UTF-8 byte order mark, which the reader
// would drop at the start of the file.
std::string QuoteCsv(absl::string_view s) {
  const bool needs = s.empty() || absl::StartsWith(s, "\xEF\xBB\xBF") ||
                     s.find_first_of(",\"\r\n") != absl::string_view::npos ||
                     (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.back() == ' ' ||
                                     s.back() == '\t'));
  if (!needs) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Timestamp continuation

// days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, int* m, int* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  *m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

int DaysInMonth(int64_t y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

bool Digits(absl::string_view s, size_t pos, size_t count, int* v) {
  if (pos + count > s.size()) return false;
  int x = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    x = x * 10 + (s[i] - '0');
  }
  *v = x;
  return true;
}

// "YYYY-MM" -> months since year 0.
std::optional<int64_t> YearMonth(absl::string_view s) {
  int y, m;
  if (s.size() != 7 || !Digits(s, 0, 4, &y) || s[4] != '-' || !Digits(s, 5, 2, &m) || m < 1 ||
      m > 12)
    return std::nullopt;
  return int64_t{y} * 12 + m - 1;
}

// "YYYY-MM-DD" at the start of s.
bool Date(absl::string_view s, int* y, int* m, int* d) {
  return s.size() >= 10 && Digits(s, 0, 4, y) && s[4] == '-' && Digits(s, 5, 2, m) && s[7] == '-' &&
         Digits(s, 8, 2, d) && *m >= 1 && *m <= 12 && *d >= 1 && *d <= DaysInMonth(*y, *m);
}

// "YYYY-MM-DD{sep}HH:MM[:SS]" with the given separator and precision -> seconds since 1970.
std::optional<int64_t> DateTime(absl::string_view s, char sep, bool seconds) {
  int y, mo, d, h, mi, sec = 0;
  if (s.size() != (seconds ? 19u : 16u) || !Date(s, &y, &mo, &d) || s[10] != sep ||
      !Digits(s, 11, 2, &h) || s[13] != ':' || !Digits(s, 14, 2, &mi) || h > 23 || mi > 59)
    return std::nullopt;
  if (seconds && (s[16] != ':' || !Digits(s, 17, 2, &sec) || sec > 59)) return std::nullopt;
  return DaysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
}

// Decimal "[-+]digits[.digits]": its digits as an integer and the count after the point.
bool Decimal(absl::string_view s, int64_t* mantissa, int* decimals, int* digits) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  int64_t v = 0;
  int n_int = 0, n_frac = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++n_int) {
    if (n_int == 18) return false;  // more digits than int64 holds exactly
    v = v * 10 + (s[i] - '0');
  }
  if (n_int == 0) return false;
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++n_frac) {
      if (n_int + n_frac >= 18) return false;
      v = v * 10 + (s[i] - '0');
    }
    if (n_frac == 0) return false;
  }
  if (i != s.size()) return false;
  *mantissa = neg ? -v : v;
  *decimals = n_frac;
  *digits = n_int + n_frac;
  return true;
}

// values[i+1] - values[i] is the same positive step for every i (at least two values).
std::optional<int64_t> EvenStep(const std::vector<int64_t>& v) {
  if (v.size() < 2) return std::nullopt;
  int64_t step;
  if (__builtin_sub_overflow(v[1], v[0], &step) || step <= 0) return std::nullopt;
  for (size_t i = 2; i < v.size(); ++i) {
    int64_t s;
    if (__builtin_sub_overflow(v[i], v[i - 1], &s) || s != step) return std::nullopt;
  }
  return step;
}

// last + k * step for k = 1..horizon; nullopt on overflow.
std::optional<std::vector<int64_t>> Extend(int64_t last, int64_t step, int horizon) {
  std::vector<int64_t> out;
  int64_t cur = last;
  for (int k = 0; k < horizon; ++k) {
    if (__builtin_add_overflow(cur, step, &cur)) return std::nullopt;
    out.push_back(cur);
  }
  return out;
}

std::optional<std::vector<std::string>> ContinueDecimal(absl::Span<const std::string> ts,
                                                        int horizon) {
  std::vector<int64_t> mant(ts.size());
  std::vector<int> dec(ts.size()), dig(ts.size());
  int max_dec = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (!Decimal(ts[i], &mant[i], &dec[i], &dig[i])) return std::nullopt;
    max_dec = std::max(max_dec, dec[i]);
  }
  std::vector<int64_t> scaled(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    if (dig[i] + max_dec - dec[i] > 18) return std::nullopt;
    scaled[i] = mant[i];
    for (int k = dec[i]; k < max_dec; ++k) scaled[i] *= 10;
  }
  const std::optional<int64_t> step = EvenStep(scaled);
  if (!step) return std::nullopt;
  const auto next = Extend(scaled.back(), *step, horizon);
  if (!next) return std::nullopt;
  std::vector<std::string> out;
  for (int64_t v : *next) {
    // |v| < 2^63; as unsigned to print INT64_MIN's magnitude safely.
    const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    std::string digits = absl::StrCat(mag);
    if (max_dec > 0) {
      const size_t dec = static_cast<size_t>(max_dec);
      if (digits.size() <= dec) digits = std::string(dec + 1 - digits.size(), '0') + digits;
      const size_t point = digits.size() - dec;
      digits = absl::StrCat(digits.substr(0, point), ".", digits.substr(point));
    }
    out.push_back(absl::StrCat(v < 0 ? "-" : "", digits));
  }
  return out;
}

std::optional<std::vector<std::string>> ContinueYearMonth(absl::Span<const std::string> ts,
                                                          int horizon) {
  std::vector<int64_t> months;
  for (const std::string& s : ts) {
    const std::optional<int64_t> m = YearMonth(s);
    if (!m) return std::nullopt;
    months.push_back(*m);
  }
  const std::optional<int64_t> step = EvenStep(months);
  if (!step) return std::nullopt;
  std::vector<std::string> out;
  int64_t m = months.back();
  for (int k = 1; k <= horizon; ++k) {
    m += *step;  // the year check stops the loop long before an overflow
    if (m / 12 > 9999) return std::nullopt;
    out.push_back(absl::StrFormat("%04d-%02d", m / 12, m % 12 + 1));
  }
  return out;
}

std::optional<std::vector<std::string>> ContinueDate(absl::Span<const std::string> ts,
                                                     int horizon) {
  std::vector<int64_t> days, months;
  bool same_day = true;
  int first_day = -1;
  for (const std::string& s : ts) {
    int y, m, d;
    if (s.size() != 10 || !Date(s, &y, &m, &d)) return std::nullopt;
    days.push_back(DaysFromCivil(y, m, d));
    months.push_back(int64_t{y} * 12 + m - 1);
    if (first_day < 0) first_day = d;
    same_day = same_day && d == first_day && d <= 28;
  }
  std::vector<std::string> out;
  // Monthly data (the same day of every month) steps in months; else a constant step in days.
  if (const std::optional<int64_t> mstep = same_day ? EvenStep(months) : std::nullopt) {
    int64_t m = months.back();
    for (int k = 1; k <= horizon; ++k) {
      m += *mstep;
      if (m / 12 > 9999) return std::nullopt;
      out.push_back(absl::StrFormat("%04d-%02d-%02d", m / 12, m % 12 + 1, first_day));
    }
    return out;
  }
  const std::optional<int64_t> step = EvenStep(days);
  if (!step) return std::nullopt;
  int64_t day = days.back();
  for (int k = 1; k <= horizon; ++k) {
    day += *step;
    int64_t y;
    int m, d;
    CivilFromDays(day, &y, &m, &d);
    if (y > 9999) return std::nullopt;
    out.push_back(absl::StrFormat("%04d-%02d-%02d", y, m, d));
  }
  return out;
}

std::optional<std::vector<std::string>> ContinueDateTime(absl::Span<const std::string> ts,
                                                         int horizon) {
  if (ts.empty() || ts[0].size() < 16) return std::nullopt;
  const char sep = ts[0][10];
  const bool seconds = ts[0].size() == 19;
  if (sep != ' ' && sep != 'T') return std::nullopt;
  std::vector<int64_t> secs;
  for (const std::string& s : ts) {
    const std::optional<int64_t> v = DateTime(s, sep, seconds);
    if (!v) return std::nullopt;
    secs.push_back(*v);
  }
  const std::optional<int64_t> step = EvenStep(secs);
  if (!step) return std::nullopt;
  std::vector<std::string> out;
  int64_t t = secs.back();
  for (int k = 1; k <= horizon; ++k) {
    t += *step;
    const int64_t day = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    const int64_t sod = t - day * 86400;
    int64_t y;
    int m, d;
    CivilFromDays(day, &y, &m, &d);
    if (y > 9999) return std::nullopt;
    std::string s =
        absl::StrFormat("%04d-%02d-%02d%c%02d:%02d", y, m, d, sep, sod / 3600, sod / 60 % 60);
    if (seconds) absl::StrAppendFormat(&s, ":%02d", sod % 60);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::vector<std::string> ContinueTimestamps(absl::Span<const std::string> timestamps, int horizon) {
  if (horizon < 1) return {};
  if (timestamps.size() >= 2) {
    for (auto* form : {&ContinueDecimal, &ContinueYearMonth, &ContinueDate, &ContinueDateTime}) {
      std::optional<std::vector<std::string>> out = form(timestamps, horizon);
      if (out) return *std::move(out);
    }
  }
  std::vector<std::string> steps;
  for (int k = 1; k <= horizon; ++k) steps.push_back(absl::StrCat("+", k));
  return steps;
}

absl::StatusOr<SeriesCsv> ParseSeriesCsv(std::string_view text, absl::string_view field) {
  std::vector<Record> records;
  if (absl::Status s = Tokenize(text, field, &records); !s.ok()) return s;
  while (!records.empty() && IsBlank(records.back())) records.pop_back();
  if (records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": the CSV is empty; expected a header row, then one row per time step"));
  }
  const Record& header = records[0];
  if (IsBlank(header)) return Bad(field, header.line, "the header row is blank");
  if (records.size() == 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": the CSV has a header row but no time steps (one row per step expected)"));
  }
  constexpr size_t kMaxRows = std::numeric_limits<int32_t>::max();
  if (records.size() - 1 > kMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": more than ", kMaxRows, " rows"));
  }
  const size_t cols = header.fields.size();
  std::vector<std::string> names(cols);
  for (size_t c = 0; c < cols; ++c) {
    names[c] = header.quoted[c] ? header.fields[c] : std::string(Trim(header.fields[c]));
  }
  for (size_t r = 1; r < records.size(); ++r) {
    const Record& rec = records[r];
    if (IsBlank(rec)) {
      return Bad(field, rec.line,
                 "is blank (a blank line is accepted only at the end; between steps it would be "
                 "a missing step)");
    }
    if (rec.fields.size() != cols) {
      return Bad(field, rec.line,
                 absl::StrCat("has ", rec.fields.size(), " fields, the header has ", cols));
    }
  }
  float probe;
  const Num first_field = ParseNumber(records[1].fields[0], &probe);
  const bool ts =
      IsTimestampName(names[0]) || first_field == Num::kNotNumber || first_field == Num::kEmpty;
  if (ts && cols == 1) {
    return Bad(field, header.line,
               absl::StrCat("the only column (", Shown(names[0]),
                            ") is a timestamp column; expected one value column per channel "
                            "after it"));
  }
  SeriesCsv out;
  const size_t first = ts ? 1 : 0;
  out.has_timestamps = ts;
  if (ts) out.timestamp_name = names[0];
  out.channel_names.assign(names.begin() + first, names.end());
  out.series.length = static_cast<int>(records.size() - 1);
  out.series.channels = static_cast<int>(cols - first);
  out.series.values.reserve(static_cast<size_t>(out.series.length) * out.series.channels);
  for (size_t r = 1; r < records.size(); ++r) {
    const Record& rec = records[r];
    if (ts)
      out.timestamps.push_back(rec.quoted[0] ? rec.fields[0] : std::string(Trim(rec.fields[0])));
    for (size_t c = first; c < cols; ++c) {
      float v = 0;
      const Num n = ParseNumber(rec.fields[c], &v);
      if (n == Num::kOk) {
        out.series.values.push_back(v);
        continue;
      }
      const std::string where = absl::StrCat("column ", c + 1, " (", Shown(names[c]), "): ");
      switch (n) {
        case Num::kEmpty:
          return Bad(field, rec.line, absl::StrCat(where, "empty value"));
        case Num::kNotNumber:
          return Bad(field, rec.line,
                     absl::StrCat(where, Shown(rec.fields[c]), " is not a number"));
        case Num::kNonFinite:
          return Bad(field, rec.line,
                     absl::StrCat(where, Shown(Trim(rec.fields[c])),
                                  " is not a finite value (NaN and Inf are refused)"));
        default:
          return Bad(
              field, rec.line,
              absl::StrCat(where, Shown(Trim(rec.fields[c])), " is beyond the float32 range"));
      }
    }
  }
  return out;
}

absl::StatusOr<std::string> FormatForecastCsv(const SeriesCsv& input,
                                              absl::Span<const float> forecast, int horizon,
                                              absl::Span<const float> levels,
                                              absl::Span<const float> quantiles) {
  const int channels = input.series.channels;
  if (channels < 1 || horizon < 1 ||
      forecast.size() != static_cast<size_t>(horizon) * static_cast<size_t>(channels)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FormatForecastCsv: ", forecast.size(), " forecast values for ", horizon,
                     " steps x ", channels, " channels (expected horizon x channels)"));
  }
  if (!input.channel_names.empty() && input.channel_names.size() != static_cast<size_t>(channels)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FormatForecastCsv: ", input.channel_names.size(), " channel names for ",
                     channels, " channels"));
  }
  if (quantiles.size() != levels.size() * forecast.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("FormatForecastCsv: ", quantiles.size(), " quantile values for ",
                     levels.size(), " levels x ", forecast.size(), " forecast values"));
  }
  auto name = [&](int c) -> std::string {
    return input.channel_names.empty() ? absl::StrCat("ch", c) : input.channel_names[c];
  };
  std::string out;
  if (input.has_timestamps) absl::StrAppend(&out, QuoteCsv(input.timestamp_name), ",");
  for (int c = 0; c < channels; ++c) absl::StrAppend(&out, c ? "," : "", QuoteCsv(name(c)));
  for (float level : levels) {
    for (int c = 0; c < channels; ++c) {
      absl::StrAppend(&out, ",",
                      QuoteCsv(absl::StrFormat("%s_q%g", name(c), static_cast<double>(level))));
    }
  }
  out.push_back('\n');
  std::vector<std::string> stamps;
  if (input.has_timestamps) stamps = ContinueTimestamps(input.timestamps, horizon);
  for (int h = 0; h < horizon; ++h) {
    if (input.has_timestamps) absl::StrAppend(&out, QuoteCsv(stamps[h]), ",");
    for (int c = 0; c < channels; ++c) {
      absl::StrAppendFormat(&out, "%s%.9g", c ? "," : "",
                            static_cast<double>(forecast[static_cast<size_t>(h) * channels + c]));
    }
    for (size_t k = 0; k < levels.size(); ++k) {
      for (int c = 0; c < channels; ++c) {
        absl::StrAppendFormat(
            &out, ",%.9g",
            static_cast<double>(
                quantiles[k * forecast.size() + static_cast<size_t>(h) * channels + c]));
      }
    }
    out.push_back('\n');
  }
  return out;
}

}  // namespace modrwkv::encoders
