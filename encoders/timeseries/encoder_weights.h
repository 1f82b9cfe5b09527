// Reading the time-series encoders' tensors (WaveNet, Timer): lookups that record what was used,
// shape checks whose errors name the tensor, f32 conversion, packing for the panel GEMM, the
// layer count of a checkpoint and the strict "nothing else under the prefix" check.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"

namespace modrwkv::encoders::ts_weights {

using TensorMap = std::map<std::string, TensorView>;

// The tensor `name` (recorded in `used`); NotFound naming it when absent.
absl::StatusOr<const TensorView*> Need(const TensorMap& t, const std::string& name,
                                       std::set<std::string>* used);
// InvalidArgument naming the tensor, its shape and `want` (+ `meaning`) unless they match.
absl::Status CheckShape(const TensorView& v, const std::vector<int64_t>& want,
                        absl::string_view meaning = "");
// Need + CheckShape + conversion to f32.
absl::StatusOr<std::vector<float>> ReadF32(const TensorMap& t, const std::string& name,
                                           const std::vector<int64_t>& shape,
                                           std::set<std::string>* used);
std::vector<float> ToF32(const TensorView& t);
// The [rows][cols] weights `names` (each checked) stacked row-wise into one packed matrix, so
// that one GEMM runs them all.
absl::StatusOr<cpu::Matrix> Stacked(const TensorMap& t, const std::vector<std::string>& names,
                                    int rows, int cols, std::set<std::string>* used);
// The [n] vectors `names` (each checked) concatenated: the biases of a Stacked matrix.
absl::StatusOr<std::vector<float>> Concatenated(const TensorMap& t,
                                                const std::vector<std::string>& names, int n,
                                                std::set<std::string>* used);
// w [rows][cols] (f32, row-major) packed for the panel GEMM; `name` names it in errors.
cpu::Matrix Packed(const std::vector<float>& w, int rows, int cols, const std::string& name);
// 1 + the largest i of the tensors named <layers_prefix><i>.*; 0 when none.
absl::StatusOr<int> LayerCount(const TensorMap& t, const std::string& layers_prefix);
// InvalidArgument naming the first tensor under `prefix` not in `used` (`format` says what the
// format has).
absl::Status NothingElse(const TensorMap& t, const std::string& prefix,
                         const std::set<std::string>& used, absl::string_view format);

}  // namespace modrwkv::encoders::ts_weights
