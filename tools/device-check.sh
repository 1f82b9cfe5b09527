#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine that has only the CUDA toolkit (no Abseil, GoogleTest
# or the server's libraries, and no network), in two halves:
#
#   tools/device-check.sh pack   here, on a Debian machine with the project's dependencies:
#                                builds the CUDA tests and cuda_bench (release preset with the
#                                CUDA backend, sm_80 + sm_90) into out/device-check/ with the libraries
#                                they need beyond glibc, libstdc++ and the CUDA driver/runtime.
#   tools/device-check.sh run    there, in the repository root (out/device-check carried): runs
#                                cuda_wkv_test, cuda_model_test and cuda_bench and prints a table.
#
# The GPU machine's glibc and libstdc++ must be at least this machine's (Debian 12: glibc 2.36,
# GCC 12); its driver must support CUDA 13 (the runtime is linked in statically) and it must have
# cuBLAS 13 (libcublas.so.13, opened at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/device-check

case "${1:-}" in
  pack)
    cmake --preset release -DMODRWKV_CUDA=ON >/dev/null
    cmake --build build -j"$(nproc)" --target cuda_wkv_test cuda_model_test cuda_bench
    rm -rf "$out" && mkdir -p "$out/bin" "$out/lib"
    cp build/bin/cuda_wkv_test build/bin/cuda_model_test build/bin/cuda_bench "$out/bin/"
    # Libraries from outside the base system: Abseil, GoogleTest, zlib and the like.
    ldd "$out"/bin/* | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
      case $name in
        libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | \
          libgcc_s.so* | libstdc++.so* | libcuda.so* | libcublas*) ;;
        *) cp -L "$path" "$out/lib/" ;;
      esac
    done
    du -sh "$out"
    ;;
  run)
    [[ -x $out/bin/cuda_model_test ]] || { echo "run 'tools/device-check.sh pack' first" >&2; exit 2; }
    # The machine's own cuBLAS (it must match its driver).
    export LD_LIBRARY_PATH="$PWD/$out/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    status=0
    for t in cuda_wkv_test cuda_model_test; do
      echo "== $t"
      "$out/bin/$t" --gtest_brief=1 || status=1
    done
    for dtype in f32 bf16; do
      echo "== cuda_bench (0.1B shape, $dtype weights on the device)"
      "$out/bin/cuda_bench" 0.1b 512 32 0 "$dtype" || status=1
    done
    exit $status
    ;;
  *)
    echo "usage: tools/device-check.sh pack|run" >&2
    exit 2
    ;;
esac
