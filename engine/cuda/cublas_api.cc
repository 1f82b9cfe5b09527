#include "engine/cuda/cublas_api.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace modrwkv::cuda {
namespace {

// The cuBLAS of the toolkit the binary was built with: its major version (libcublas.so.13 for a
// CUDA 13 build, .12 for a CUDA 12 image's), whose ABI the function pointers below assume.
std::string VersionedCublas() { return absl::StrCat("libcublas.so.", CUDART_VERSION / 1000); }

absl::StatusOr<CublasApi> Open() {
  void* lib = nullptr;
  std::string errors;
  const std::string versioned = VersionedCublas();
  for (const char* name : {versioned.c_str(), "libcublas.so"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", dlerror());
  }
  if (lib == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open cuBLAS (", versioned, " from the CUDA toolkit): ", errors));
  }
  CublasApi api{};
  absl::Status missing;
  auto sym = [&](auto* fn, const char* name) {
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(lib, name));
    if (*fn == nullptr && missing.ok()) {
      missing = absl::FailedPreconditionError(absl::StrCat("cuBLAS has no ", name));
    }
  };
  sym(&api.Create, "cublasCreate_v2");
  sym(&api.Destroy, "cublasDestroy_v2");
  sym(&api.SetStream, "cublasSetStream_v2");
  sym(&api.SetMathMode, "cublasSetMathMode");
  sym(&api.SetWorkspace, "cublasSetWorkspace_v2");
  sym(&api.Sgemm, "cublasSgemm_v2");
  sym(&api.SgemmStridedBatched, "cublasSgemmStridedBatched");
  sym(&api.GemmEx, "cublasGemmEx");
  if (!missing.ok()) return missing;  // the library stays open: it is never closed anyway
  return api;
}

}  // namespace

absl::StatusOr<const CublasApi*> Cublas() {
  static const absl::StatusOr<CublasApi>* const api = new absl::StatusOr<CublasApi>(Open());
  if (!api->ok()) return api->status();
  return &**api;
}

}  // namespace modrwkv::cuda
