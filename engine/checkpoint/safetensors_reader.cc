// Parses and validates a safetensors header; tensor data is not touched.
#include <algorithm>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint/le_bytes.h"
#include "engine/checkpoint/safetensors.h"
#include "nlohmann/json.hpp"

namespace modrwkv {
namespace {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 64;
constexpr uint64_t kMaxCount = uint64_t{1} << 60;

absl::Status Bad(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("bad safetensors header: ", what));
}

// The header is untrusted: bound its nesting before handing it to a parser.
bool DepthWithin(absl::string_view s, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        return false;
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

absl::StatusOr<DType> ParseDType(const std::string& name, const std::string& dtype) {
  if (dtype == "BF16") {
    return DType::kBF16;
  }
  if (dtype == "F16") {
    return DType::kF16;
  }
  if (dtype == "F32") {
    return DType::kF32;
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ",
                                                 dtype.substr(0, 32),
                                                 "; supported dtypes are BF16, F16, F32"));
}

absl::StatusOr<uint64_t> Unsigned(const json& v, const std::string& name, absl::string_view what) {
  if (!v.is_number_unsigned()) {
    return Bad(absl::StrCat("tensor ", name, ": ", what, " must be non-negative integers"));
  }
  const uint64_t u = v.get<uint64_t>();
  if (u > kMaxCount) {
    return Bad(absl::StrCat("tensor ", name, ": ", what, " ", u, " too large"));
  }
  return u;
}

}  // namespace

absl::StatusOr<std::map<std::string, TensorView>> ReadSafetensors(absl::Span<const uint8_t> file) {
  if (file.size() < 8) {
    return Bad(absl::StrCat("file has only ", file.size(), " bytes"));
  }
  const uint64_t header_len = le::Load64(file.data());
  if (header_len > file.size() - 8) {
    return Bad(absl::StrCat("header length ", header_len, " exceeds the ", file.size(),
                            "-byte file (truncated?)"));
  }
  if (header_len > kMaxSafetensorsHeader) {
    return Bad(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                            kMaxSafetensorsHeader));
  }
  const absl::string_view text(reinterpret_cast<const char*>(file.data() + 8), header_len);
  if (!DepthWithin(text, kMaxJsonDepth)) {
    return Bad("JSON nested too deeply");
  }
  if (!text.empty() && text[0] != '{') {
    return Bad("header is not a JSON object: it must start with '{' (only trailing spaces pad it)");
  }
  // The format forbids duplicate keys; a JSON object would silently keep the last one.
  std::set<std::string> keys;
  std::string duplicate;
  const json::parser_callback_t on_key = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
        !keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  const json header = json::parse(text.begin(), text.end(), on_key, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return Bad("header is not valid JSON");
  }
  if (!duplicate.empty()) {
    return Bad(absl::StrCat("tensor ", duplicate.substr(0, 256), " appears twice in the header"));
  }
  if (!header.is_object()) {
    return Bad("header is not a JSON object");
  }

  const uint8_t* data = file.data() + 8 + header_len;
  const uint64_t data_size = file.size() - 8 - header_len;
  std::map<std::string, TensorView> out;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      continue;
    }
    if (!info.is_object()) {
      return Bad(absl::StrCat("entry ", name, " is not an object"));
    }
    const auto dtype_it = info.find("dtype");
    const auto shape_it = info.find("shape");
    const auto offsets_it = info.find("data_offsets");
    if (dtype_it == info.end() || !dtype_it->is_string() || shape_it == info.end() ||
        !shape_it->is_array() || offsets_it == info.end() || !offsets_it->is_array() ||
        offsets_it->size() != 2) {
      return Bad(absl::StrCat("tensor ", name,
                              " needs dtype (string), shape (array) and "
                              "data_offsets ([begin, end])"));
    }
    auto dtype = ParseDType(name, dtype_it->get<std::string>());
    if (!dtype.ok()) {
      return dtype.status();
    }
    const uint64_t esize = DTypeSize(*dtype);
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const json& d : *shape_it) {
      auto dim = Unsigned(d, name, "shape");
      if (!dim.ok()) {
        return dim.status();
      }
      if (shape.size() >= 32) {
        return Bad(absl::StrCat("tensor ", name, " has too many dims"));
      }
      if (*dim != 0 && numel > kMaxCount / esize / *dim) {
        return Bad(absl::StrCat("tensor ", name, " is too large"));
      }
      numel *= *dim;
      shape.push_back(static_cast<int64_t>(*dim));
    }
    auto begin = Unsigned((*offsets_it)[0], name, "data_offsets");
    if (!begin.ok()) {
      return begin.status();
    }
    auto end = Unsigned((*offsets_it)[1], name, "data_offsets");
    if (!end.ok()) {
      return end.status();
    }
    if (*begin > *end || *end > data_size) {
      return Bad(absl::StrCat("tensor ", name, " data_offsets [", *begin, ", ", *end,
                              "] lie outside the ", data_size, "-byte data section"));
    }
    if (*end - *begin != numel * esize) {
      return Bad(absl::StrCat("tensor ", name, " ", std::string(DTypeName(*dtype)),
                              ShapeToString(shape), " needs ", numel * esize,
                              " bytes but data_offsets span ", *end - *begin));
    }
    spans.push_back({*begin, *end, nullptr});
    TensorView v;
    v.name = name;
    v.dtype = *dtype;
    v.shape = std::move(shape);
    v.data = data + *begin;
    v.nbytes = static_cast<size_t>(numel * esize);
    spans.back().name = &out.emplace(name, std::move(v)).first->first;
  }
  // As the format requires: sorted by offset, the tensors tile the data section exactly. A gap
  // would hide bytes no tensor owns, an overlap would alias two tensors.
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t covered = 0;
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin < covered) {
      return Bad(absl::StrCat("data_offsets of ", *s.name, " [", s.begin, ", ", s.end, ") overlap ",
                              *prev->name, " [", prev->begin, ", ", prev->end, ")"));
    }
    if (s.begin > covered) {
      return Bad(absl::StrCat("data_offsets leave bytes [", covered, ", ", s.begin,
                              ") of the data section unused (before ", *s.name, ")"));
    }
    covered = s.end;
    prev = &s;
  }
  if (covered != data_size) {
    return Bad(absl::StrCat("data_offsets leave bytes [", covered, ", ", data_size,
                            ") of the data section unused (at its end)"));
  }
  return out;
}

}  // namespace modrwkv
