#include "encoders/timeseries/encoder_weights.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders::ts_weights {

absl::StatusOr<const TensorView*> Need(const TensorMap& t, const std::string& name,
                                       std::set<std::string>* used) {
  auto it = t.find(name);
  if (it == t.end()) {
    return absl::NotFoundError(absl::StrCat("time-series encoder: tensor ", name, " is missing"));
  }
  used->insert(name);
  return &it->second;
}

absl::Status CheckShape(const TensorView& v, const std::vector<int64_t>& want,
                        absl::string_view meaning) {
  if (v.shape != want) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: tensor ", v.name,
                                                   " has shape ", v.ShapeString(), ", expected ",
                                                   ShapeToString(want), meaning));
  }
  return absl::OkStatus();
}

std::vector<float> ToF32(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, v.size(), v.data());
  return v;
}

absl::StatusOr<std::vector<float>> ReadF32(const TensorMap& t, const std::string& name,
                                           const std::vector<int64_t>& shape,
                                           std::set<std::string>* used) {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* v, Need(t, name, used));
  MODRWKV_RETURN_IF_ERROR(CheckShape(*v, shape));
  return ToF32(*v);
}

cpu::Matrix Packed(const std::vector<float>& w, int rows, int cols, const std::string& name) {
  TensorView view;
  view.name = name;
  view.dtype = DType::kF32;
  view.shape = {rows, cols};
  view.data = w.data();
  view.nbytes = w.size() * sizeof(float);
  return cpu::MakeMatrix(view, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
}

absl::StatusOr<std::vector<float>> Concatenated(const TensorMap& t,
                                                const std::vector<std::string>& names, int n,
                                                std::set<std::string>* used) {
  std::vector<float> all;
  for (const std::string& name : names) {
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> v, ReadF32(t, name, {n}, used));
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

absl::StatusOr<cpu::Matrix> Stacked(const TensorMap& t, const std::vector<std::string>& names,
                                    int rows, int cols, std::set<std::string>* used) {
  std::vector<float> all;
  for (const std::string& name : names) {
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> w, ReadF32(t, name, {rows, cols}, used));
    all.insert(all.end(), w.begin(), w.end());
  }
  return Packed(all, rows * static_cast<int>(names.size()), cols, names[0]);
}

absl::StatusOr<int> LayerCount(const TensorMap& t, const std::string& layers_prefix) {
  int n = 0;
  for (auto it = t.lower_bound(layers_prefix);
       it != t.end() && absl::StartsWith(it->first, layers_prefix); ++it) {
    const std::string rest = it->first.substr(layers_prefix.size());
    int i = -1;
    if (!absl::SimpleAtoi(rest.substr(0, rest.find('.')), &i) || i < 0 || i > (1 << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("time-series encoder: unexpected tensor ", it->first));
    }
    n = std::max(n, i + 1);
  }
  return n;
}

absl::Status NothingElse(const TensorMap& t, const std::string& prefix,
                         const std::set<std::string>& used, absl::string_view format) {
  for (auto it = t.lower_bound(prefix); it != t.end() && absl::StartsWith(it->first, prefix);
       ++it) {
    if (!used.count(it->first)) {
      return absl::InvalidArgumentError(
          absl::StrCat("time-series encoder: unexpected tensor ", it->first, " (", format, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders::ts_weights
