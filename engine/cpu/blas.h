// OpenBLAS, loaded at run time with the right kernels for this CPU.
//
// Debian's OpenBLAS 0.3.21 does not recognise recent Xeons and silently falls back to generic
// kernels about 5x slower than its AVX-512 ones. It picks kernels once, when the library loads,
// from OPENBLAS_CORETYPE. Loading it ourselves (dlopen) lets us set that variable from the CPU's
// actual features first, so every binary gets the fast kernels without the user knowing the trap.
// BLAS is kept single-threaded: the backend's thread pool splits the work.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace modrwkv::cpu {

struct Blas {
  // cblas_sgemm with CblasRowMajor fixed: C[M,N] = alpha * A[M,K] * op(B) + beta * C.
  // trans_b: B is stored [N,K] (row-major) and used transposed.
  void (*sgemm)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
  std::string library;  // path that was loaded
  std::string core;     // kernel family OpenBLAS reports, e.g. "SkylakeX"
  std::string config;   // openblas_get_config()
};

// Loads OpenBLAS once per process. Error if it cannot be found.
absl::StatusOr<const Blas*> GetBlas();

// Kernel family this CPU should use ("SkylakeX", "Haswell", ... or "" to let OpenBLAS decide).
std::string PreferredOpenBlasCore();

}  // namespace modrwkv::cpu
