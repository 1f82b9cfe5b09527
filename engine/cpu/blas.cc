#include "engine/cpu/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace modrwkv::cpu {

std::string PreferredOpenBlasCore() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

namespace {

absl::StatusOr<Blas> Load() {
  // Respect a user's explicit choice; otherwise pick the kernels for this CPU.
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const std::string core = PreferredOpenBlasCore();
    if (!core.empty()) setenv("OPENBLAS_CORETYPE", core.c_str(), 0);
  }
  // Our pool owns the cores; OpenBLAS's own threads would spin against it.
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
  setenv("OPENBLAS_MAIN_FREE", "1", 0);

  const char* candidates[] = {
      "libopenblas.so.0",
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
      "libopenblas.so",
  };
  void* handle = nullptr;
  std::string loaded;
  std::string errors;
  for (const char* c : candidates) {
    handle = dlopen(c, RTLD_NOW | RTLD_LOCAL);
    if (handle) {
      loaded = c;
      break;
    }
    absl::StrAppend(&errors, " ", dlerror(), ";");
  }
  if (!handle) {
    return absl::FailedPreconditionError(
        absl::StrCat("OpenBLAS not found (install libopenblas0):", errors));
  }
  Blas blas;
  blas.library = loaded;
  blas.sgemm = reinterpret_cast<decltype(blas.sgemm)>(dlsym(handle, "cblas_sgemm"));
  if (!blas.sgemm) return absl::FailedPreconditionError("OpenBLAS has no cblas_sgemm");
  using CharFn = char* (*)();
  if (auto f = reinterpret_cast<CharFn>(dlsym(handle, "openblas_get_corename"))) blas.core = f();
  if (auto f = reinterpret_cast<CharFn>(dlsym(handle, "openblas_get_config"))) blas.config = f();
  if (auto f = reinterpret_cast<void (*)(int)>(dlsym(handle, "openblas_set_num_threads"))) f(1);
  return blas;
}

}  // namespace

absl::StatusOr<const Blas*> GetBlas() {
  static std::once_flag once;
  static absl::StatusOr<Blas>* result = nullptr;
  std::call_once(once, [] { result = new absl::StatusOr<Blas>(Load()); });
  if (!result->ok()) return result->status();
  return &result->value();
}

}  // namespace modrwkv::cpu
