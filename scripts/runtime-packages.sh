#!/usr/bin/env bash
# Prints, one per line, the Debian (or Ubuntu) packages that hold the shared libraries the given
# binaries load: ldd resolves them, dpkg -S names their owners. The images install exactly these
# in their runtime stage, so a new dependency needs no hand-kept list.
#   scripts/runtime-packages.sh build/bin/modrwkv [more binaries...]
# Fails when a library is missing or belongs to no package, except the GPU driver's libraries,
# which the NVIDIA container runtime mounts at run time.
set -euo pipefail
(($# > 0)) || { echo "usage: $0 BINARY..." >&2; exit 2; }

driver_libs='^(libcuda|libnvidia-[a-z-]*)\.so'

status=0
paths=()
for bin in "$@"; do
  listing=$(ldd "$bin") || { echo "runtime-packages: ldd $bin failed" >&2; exit 1; }
  while read -r lib arrow path _; do
    [[ $arrow == "=>" ]] || continue
    if [[ $path == /* ]]; then
      paths+=("$path")
    elif [[ ! $lib =~ $driver_libs ]]; then
      echo "runtime-packages: $bin needs $lib, which is not installed" >&2
      status=1
    fi
  done <<<"$listing"
done
# The spellings a library may have in dpkg's database: as ldd printed it, with or without the
# merged-/usr prefix, and its symlink target.
candidates() {
  local p=$1
  echo "$p"
  case $p in
    /usr/lib/*) echo "${p#/usr}" ;;
    /lib/*) echo "/usr$p" ;;
  esac
  realpath "$p"
}
mapfile -t unique < <(printf '%s\n' "${paths[@]}" | sort -u)
declare -A owner_of=()
# One dpkg query for all of them (one per path takes a minute); unknown spellings only warn.
while IFS= read -r line; do
  [[ $line == *": /"* ]] || continue
  owner_of[${line#*: }]=${line%%: *}
done < <(for p in "${unique[@]}"; do candidates "$p"; done | sort -u | xargs dpkg -S 2>/dev/null || true)
packages=()
for p in "${unique[@]}"; do
  pkg=
  while read -r c; do
    [[ -n ${owner_of[$c]:-} ]] && { pkg=${owner_of[$c]}; break; }
  done < <(candidates "$p")
  if [[ -z $pkg ]]; then
    echo "runtime-packages: no package owns $p" >&2
    status=1
    continue
  fi
  pkg=${pkg%%,*}  # "a, b: path" when two packages ship it: the first is enough
  packages+=("${pkg%%:*}")  # without the ":amd64" qualifier
done
((status == 0)) || exit "$status"
printf '%s\n' "${packages[@]}" | sort -u
