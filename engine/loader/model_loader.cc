#include "engine/loader/model_loader.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/cpu/cpu_model.h"
#if MODRWKV_HAVE_CUDA
#include "engine/cuda/cuda_model.h"
#endif

namespace modrwkv {

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const std::map<std::string, TensorView>& tensors,
                                                   const ModelOptions& options) {
  MODRWKV_ASSIGN_OR_RETURN(const int cuda_device, options.CudaDevice());
  if (cuda_device >= 0) {
#if MODRWKV_HAVE_CUDA
    MODRWKV_ASSIGN_OR_RETURN(auto model, cuda::CudaModel::Create(tensors, options, cuda_device));
    return std::unique_ptr<Model>(std::move(model));
#else
    return absl::FailedPreconditionError(
        absl::StrCat("device ", options.device,
                     ": this build has no CUDA backend (configure with -DMODRWKV_CUDA=ON)"));
#endif
  }
  MODRWKV_ASSIGN_OR_RETURN(auto model, cpu::CpuModel::Create(tensors, options));
  return std::unique_ptr<Model>(std::move(model));
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const ModelOptions& options,
                                                 const CheckpointOptions& checkpoint) {
  MODRWKV_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(path, checkpoint));
  auto model = CreateModel(ckpt->tensors(), options);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(path, ": ", model.status().message()));
  }
  return model;
}

}  // namespace modrwkv
