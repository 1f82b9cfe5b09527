// Loading helpers shared by the encoders (see tensor_source.h).
#include "encoders/vision/tensor_source.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {

absl::StatusOr<const TensorView*> TensorSource::Get(const std::string& key,
                                                    const std::vector<int64_t>& shape) const {
  const std::string name = prefix_ + key;
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat("missing tensor ", name, " (expected shape ", ShapeToString(shape), ")"));
  }
  const TensorView& t = it->second;
  if (t.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", t.ShapeString(),
                                                   ", expected ", ShapeToString(shape)));
  }
  if (t.nbytes < static_cast<size_t>(t.numel()) * DTypeSize(t.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " holds ", t.nbytes, " bytes, fewer than its shape needs"));
  }
  return &t;
}

absl::StatusOr<std::vector<float>> TensorSource::Floats(const std::string& key,
                                                        const std::vector<int64_t>& shape) const {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* t, Get(key, shape));
  std::vector<float> v(static_cast<size_t>(t->numel()));
  ConvertToF32(t->dtype, t->data, v.size(), v.data());
  return v;
}

absl::StatusOr<cpu::Matrix> TensorSource::Weight(const std::string& key, int64_t out,
                                                 int64_t in) const {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* t, Get(key, {out, in}));
  return cpu::MakeMatrix(*t, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
}

cpu::Matrix PackF32(const std::vector<float>& w, int64_t out, int64_t in) {
  TensorView view;
  view.dtype = DType::kF32;
  view.shape = {out, in};
  view.data = w.data();
  view.nbytes = w.size() * 4;
  return cpu::MakeMatrix(view, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
}

absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::filesystem::path> FindWeightsFile(const std::filesystem::path& dir) {
  for (const char* name : {"model.safetensors", "pytorch_model.bin"}) {
    if (std::filesystem::exists(dir / name)) return dir / name;
  }
  return absl::NotFoundError(
      absl::StrCat("no model.safetensors or pytorch_model.bin in ", dir.string()));
}

bool HasPrefix(const std::map<std::string, TensorView>& tensors, const std::string& prefix) {
  auto it = tensors.lower_bound(prefix);
  return it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace modrwkv::encoders
