#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine that has only the CUDA toolkit (no Abseil, GoogleTest
# or the server's libraries, and no network), in two halves:
#
#   tools/device-check.sh pack   here, on a Debian machine with the project's dependencies:
#                                builds the CUDA tests and cuda_bench (release preset with the
#                                CUDA backend, sm_80 + sm_90) into out/device-check/ with the libraries
#                                they need beyond glibc, libstdc++ and the CUDA driver/runtime.
#   tools/device-check.sh run    there, in the repository root (out/device-check carried): runs
#                                cuda_wkv_test, cuda_model_test and cuda_bench (the device's
#                                measured limits, then decode/prefill/capacity per shape against
#                                them) and prints the tables.
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
      timeout 120 "$out/bin/$t" --gtest_brief=1 || status=1
    done
    # The limits and every shape in one run (most of its time goes to building and uploading the
    # 7.2B shape's random weights); every step bounded so that the script always ends.
    echo "== cuda_bench (0.1B, f32 weights: cuBLAS SGEMM without TF32)"
    timeout 120 "$out/bin/cuda_bench" --shapes=0.1b --dtypes=f32 --batches=1,64,256 || status=1
    echo "== cuda_bench (bf16 weights; decode greedy on the device)"
    timeout 360 "$out/bin/cuda_bench" --shapes=0.1b,1.5b,2.9b,7.2b --dtypes=bf16 \
      --batches=1,64,256,1024 || status=1
    echo "== cuda_bench (1.5B, bf16 weights, decode without CUDA graphs: what they save)"
    timeout 90 "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --graphs=off --batches=1,64 \
      || status=1
    echo "== cuda_bench (1.5B, fp16 weights: against bf16 above)"
    timeout 90 "$out/bin/cuda_bench" --shapes=1.5b --dtypes=f16 --batches=1,256 || status=1
    echo "== cuda_bench (1.5B, bf16 weights, f16 states: the state pool's capacity)"
    timeout 120 "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --states=f16 \
      --batches=1,256,1024 || status=1
    exit $status
    ;;
  *)
    echo "usage: tools/device-check.sh pack|run" >&2
    exit 2
    ;;
esac
