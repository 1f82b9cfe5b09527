#!/usr/bin/env bash
# Installs every Debian 12 package the build and the tests need. Idempotent: installs only what is
# missing, so a second run is fast and changes nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libabsl-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
  libopenblas-dev
  nlohmann-json3-dev zlib1g-dev libcpp-httplib-dev
  libhiredis-dev redis-server
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus-cpp-dev
  libvips-dev
  libavcodec-dev libavformat-dev libavutil-dev libswresample-dev
  libfftw3-dev
  clang libclang-rt-14-dev lld
  python3
  openssl curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
