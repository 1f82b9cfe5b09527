#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine that has only the CUDA toolkit (no Abseil, GoogleTest
# or the server's libraries, and no network), in two halves:
#
#   tools/device-check.sh pack   here, on a Debian machine with the project's dependencies:
#                                builds the CUDA tests and cuda_bench (release preset with the
#                                CUDA backend, sm_80 + sm_90) into out/device-check/ with the libraries
#                                they need beyond glibc, libstdc++ and the CUDA driver/runtime.
#   tools/device-check.sh run    there, in the repository root (out/device-check carried): runs
#                                cuda_wkv_test, cuda_model_test, cuda_encoder_test, cuda_bench
#                                (the device's measured limits, then decode/prefill/capacity per
#                                shape against them) and cuda_encoder_bench, and prints the
#                                tables, within DEVICE_CHECK_SECONDS (480).
#   tools/device-check.sh profile  there too: where a step's device time goes, operation by
#                                operation (cuda_bench --breakdown=on) for the 0.1B and 1.5B
#                                shapes, and nsys's kernel summary where the machine has nsys.
#
# The binaries need glibc 2.34 and libstdc++ of GCC 11 or newer; on a GPU machine with older ones
# `run` starts them through this machine's loader and libraries, packed in out/device-check/glibc.
# Its driver must support CUDA 13 (the runtime is linked in statically) and it must have cuBLAS
# 13 (libcublas.so.13, opened at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/device-check

case "${1:-}" in
  pack)
    cmake --preset release -DMODRWKV_CUDA=ON >/dev/null
    cmake --build build -j"$(nproc)" --target cuda_wkv_test cuda_model_test cuda_bench \
      cuda_encoder_test cuda_encoder_bench
    rm -rf "$out" && mkdir -p "$out/bin" "$out/lib"
    cp build/bin/cuda_wkv_test build/bin/cuda_model_test build/bin/cuda_bench \
      build/bin/cuda_encoder_test build/bin/cuda_encoder_bench "$out/bin/"
    # Libraries from outside the base system: Abseil, GoogleTest, zlib and the like.
    ldd "$out"/bin/* | awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
      case $name in
        libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | \
          libgcc_s.so* | libstdc++.so* | libcuda.so* | libcublas*) ;;
        *) cp -L "$path" "$out/lib/" ;;
      esac
    done
    # The base system's libraries too, used only where the GPU machine's are older than these
    # (its image is not this one: a binary built here may need a newer glibc than it has).
    mkdir -p "$out/glibc"
    ldd "$out"/bin/* | awk '/=> \// {print $1, $3} /ld-linux/ {print $1, $1}' | sort -u |
      while read -r name path; do
        case $name in
          libc.so* | libm.so* | libgcc_s.so* | libstdc++.so* | */ld-linux*) cp -L "$path" "$out/glibc/" ;;
        esac
      done
    du -sh "$out"
    ;;
  run | profile)
    mode=$1
    [[ -x $out/bin/cuda_model_test ]] || { echo "run 'tools/device-check.sh pack' first" >&2; exit 2; }
    # The machine's own cuBLAS (it must match its driver).
    export LD_LIBRARY_PATH="$PWD/$out/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Where the toolkit is not in /usr/local/cuda, cuBLAS may come with Python's nvidia wheels.
    # Not `ldconfig -p | grep -q`: under pipefail grep's early exit can fail ldconfig with SIGPIPE
    # and read as "not found". `|| true` on the find: it fails on an unreadable directory (and
    # on SIGPIPE from head), and under set -e that would end the whole run here.
    if [[ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]] &&
      ! ldconfig -p 2>/dev/null | grep libcublas.so.13 >/dev/null; then
      cublas=$(find /usr /opt -name libcublas.so.13 2>/dev/null | head -1 || true)
      [[ -n $cublas ]] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$cublas")"
      echo "cuBLAS: ${cublas:-not found}"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    # One run must fit one device command (10 min) with room to spare: every step is bounded by
    # its own cap and by what is left of DEVICE_CHECK_SECONDS (default 480), most important first;
    # a step with under 20 s left is skipped and says so.
    # Binaries built on another image may not start with this one's glibc / libstdc++: then run
    # them through the packed loader and libraries (the driver and cuBLAS still come from here).
    runner=()
    if ! "$out/bin/cuda_wkv_test" --gtest_list_tests >/dev/null 2>&1; then
      echo "the binaries do not start with this system's libraries; using the packed glibc"
      "$out/bin/cuda_wkv_test" --gtest_list_tests 2>&1 | head -3 || true
      runner=("$PWD/$out/glibc/ld-linux-x86-64.so.2" --library-path
        "$PWD/$out/glibc:$LD_LIBRARY_PATH:/usr/lib/x86_64-linux-gnu:/usr/local/nvidia/lib64")
    fi
    deadline=$((SECONDS + ${DEVICE_CHECK_SECONDS:-480}))
    status=0
    step() {  # step CAP_SECONDS TITLE COMMAND...
      local cap=$1 title=$2
      shift 2
      local left=$((deadline - SECONDS))
      echo "== $title"
      if ((left < 20)); then
        echo "skipped: ${left}s of the time budget left"
        status=1
        return
      fi
      # ${runner[@]+...}: an empty array is "unbound" under set -u in bash before 4.4. -k: a
      # process wedged in the driver that outlives SIGTERM is killed 5 s later, not left to eat
      # the next steps' time.
      timeout -k 5 $((cap < left ? cap : left)) ${runner[@]+"${runner[@]}"} "$@" || status=1
    }
    if [[ $mode == profile ]]; then
      step 150 "cuda_bench --breakdown (0.1B and 1.5B bf16)" "$out/bin/cuda_bench" \
        --shapes=0.1b,1.5b --dtypes=bf16 --batches=1,256 --breakdown=on
      if command -v nsys >/dev/null; then
        echo "== nsys: kernels of 0.1B bf16 decode at batch 1 (no graphs)"
        timeout 90 nsys profile -t cuda -o /tmp/decode --force-overwrite true \
          ${runner[@]+"${runner[@]}"} "$out/bin/cuda_bench" --shapes=0.1b --dtypes=bf16 \
          --batches=1 --prefill=16 --graphs=off >/dev/null || status=1
        # || status=1: without a report (the profile timed out) the pipeline fails, and set -e
        # would end the run before its last line.
        nsys stats -q -r cuda_gpu_kern_sum -f csv /tmp/decode.nsys-rep | cut -d, -f1-9 |
          head -40 || status=1
      else
        echo "no nsys on this machine"
      fi
      echo "== done in ${SECONDS}s"
      exit $status
    fi
    step 90 "cuda_wkv_test (kernels against their CPU twins)" "$out/bin/cuda_wkv_test" --gtest_brief=1
    step 120 "cuda_model_test (the model against the CPU backend)" \
      "$out/bin/cuda_model_test" --gtest_brief=1
    step 60 "cuda_encoder_test (the encoders on the GPU against the CPU)" \
      "$out/bin/cuda_encoder_test" --gtest_brief=1
    # Most of a shape's time goes to building and uploading its random weights.
    step 120 "cuda_bench (the device's limits; 1.5B bf16: the issue's targets)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --batches=1,4,8,64,256,1024
    step 45 "cuda_bench (1.5B, bf16 weights, every value weight read: what the sparse value product saves)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --sparse-ffn=off --batches=1,4,8 --prefill=128
    step 45 "cuda_bench (1.5B, bf16 weights, weights loaded after each wait: what early loads save)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --early-loads=off --batches=1,4,8 --prefill=128
    step 45 "cuda_bench (1.5B, bf16 weights, LoRA up-projections launched on their own: what fusing them saves)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --fused-lora-up=off --batches=1,4,8 --prefill=128
    # The measurements that decide the next work on the unmet targets (prefill, batch-1 decode)
    # come right after the 1.5B figures; then the rest of the table.
    step 45 "cuda_bench (1.5B, bf16 weights: where prefill and decode steps spend their time)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --breakdown=on --batches=1,256
    step 45 "cuda_bench (1.5B, bf16 weights, prefill's time-mixing core and norms unfused: what fusing them saves)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --fused-prefill=off --batches=1
    step 45 "cuda_bench (1.5B, bf16 weights, activated products' rows in bf16: what they save)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --bf16-activation-rows=on --batches=1,256
    step 45 "cuda_bench (1.5B, bf16 weights, prompts walked token by token: what chunked WKV saves)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --chunked-wkv=off --batches=1
    step 45 "cuda_bench --kernels (single kernels against the copy bandwidth, cuBLAS beside them)" \
      "$out/bin/cuda_bench" --kernels=on --shapes=
    step 120 "cuda_bench (7.2B bf16: the shape of the Albatross and llama.cpp anchors)" \
      "$out/bin/cuda_bench" --shapes=7.2b --dtypes=bf16 --batches=1,64,256,1024
    step 60 "cuda_bench (1.5B, bf16 weights, f16 states: the state pool's capacity)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --states=f16 --batches=1,256,1024
    step 120 "cuda_encoder_bench (SigLIP2-base, Whisper-small, WavLM base+, the Timer: f32 and TF32 on the GPU against the CPU)" \
      "$out/bin/cuda_encoder_bench" --batches=1,4
    step 90 "cuda_bench (0.1B and 2.9B bf16)" \
      "$out/bin/cuda_bench" --shapes=0.1b,2.9b --dtypes=bf16 --batches=1,64,256,1024
    step 60 "cuda_bench (1.5B, fp16 weights: against bf16 above)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=f16 --batches=1,256
    step 45 "cuda_bench (1.5B, bf16 weights, plain launches: what overlapped launches save)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --overlap=off --batches=1,64 --prefill=128
    step 45 "cuda_bench (1.5B, bf16 weights, without CUDA graphs: what they save)" \
      "$out/bin/cuda_bench" --shapes=1.5b --dtypes=bf16 --graphs=off --batches=1,64
    step 45 "cuda_bench (0.1B, f32 weights: cuBLAS SGEMM without TF32)" \
      "$out/bin/cuda_bench" --shapes=0.1b --dtypes=f32 --batches=1,64,256
    echo "== done in ${SECONDS}s"
    exit $status
    ;;
  *)
    echo "usage: tools/device-check.sh pack|run|profile" >&2
    exit 2
    ;;
esac
