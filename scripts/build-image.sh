#!/usr/bin/env bash
# Builds the service's CPU image with podman and serves a demo model from it, with no registry:
#   1. the Debian 12 slim base image is made from the Debian archive with debootstrap (cached in
#      ~/.cache/modrwkv/images for a week; a fresh one after that picks up security updates),
#   2. the image packages the binaries already built in build/bin (Dockerfile target cpu-prebuilt:
#      no compiling), with the runtime packages found by scripts/runtime-packages.sh,
#   3. a container serves a random-weight demo model mounted read-only at /models; the host's
#      build/bin/modrwkv client asks it for health and a generation, the image's HEALTHCHECK runs,
#      and SIGTERM drains it to exit code 0.
#   scripts/build-image.sh            all of the above (what CI runs; build/bin must be built)
#   scripts/build-image.sh --full     instead of 2., compile the cpu target from source in the image
#                                     (15-20 min on 2 cores)
# Needs root (debootstrap, rootful podman); installs podman, runc and debootstrap when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
[[ "${1:-}" == "--full" ]] && full=1
image=localhost/modrwkv:cpu
cache=${XDG_CACHE_HOME:-$HOME/.cache}/modrwkv/images
stage=out/image
mkdir -p "$cache" "$stage"

for p in podman runc debootstrap; do
  if ! command -v "$p" >/dev/null; then
    echo "build-image: installing podman runc debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman runc debootstrap >/dev/null
    break
  fi
done

# podman's settings for this machine, whatever the host's containers.conf says:
# - runc rather than crun: Debian 12's crun refuses hosts with cgroup v1 and a hybrid
#   /sys/fs/cgroup/unified ("cgroups in hybrid mode not supported"); runc runs there.
# - explicit ulimits: podman's defaults (nofile 1048576, nproc 4194304) are above what a process
#   without CAP_SYS_RESOURCE may set, and conmon caps nproc at 32768.
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
cat >"$stage/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$PWD/$stage/containers.conf

# ---- 1. base image from the Debian archive
# Named after the Debian point release, as the registry's tags are (debian:12.N-slim), under
# localhost/ so that it never hides the registry's image.
newest=$(find "$cache" -name 'debian-12.*-slim.tar' -mtime -7 2>/dev/null | sort | tail -1)
if [[ -z $newest ]]; then
  echo "build-image: debootstrap bookworm (minbase) from deb.debian.org"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  nice debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$stage/debootstrap.log" ||
    { tail -20 "$stage/debootstrap.log"; exit 1; }
  # As the registry's debian images: all three suites, and slim (no docs, man pages or locales,
  # now or in packages installed later).
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  find "$root/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info}/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  version=$(cat "$root/etc/debian_version")
  newest=$cache/debian-$version-slim.tar
  find "$cache" -name 'debian-12.*-slim.tar' -delete  # last week's
  tar -C "$root" --numeric-owner -cf "$newest.tmp" . && mv "$newest.tmp" "$newest"
  rm -rf "$root"
  trap - EXIT
fi
version=$(basename "$newest" | sed -E 's/^debian-(.*)-slim\.tar$/\1/')
base=localhost/debian:$version-slim
if ! podman image exists "$base" ||
  [[ $(podman image inspect --format '{{index .Labels "tarball"}}' "$base") != "$(basename "$newest")@$(stat -c %Y "$newest")" ]]; then
  podman import --change "LABEL tarball=$(basename "$newest")@$(stat -c %Y "$newest")" \
    --change 'CMD ["bash"]' "$newest" "$base" >/dev/null
fi
echo "build-image: base $base ($(du -h "$newest" | cut -f1) tarball)"

# ---- 2. the image
build_args=(--format docker --build-arg "DEBIAN_SLIM_IMAGE=$base" --build-arg "DEBIAN_IMAGE=$base")
if ((full)); then
  # The full build compiles in a Debian 12 image; minbase has what install-deps.sh needs (apt).
  nice podman build "${build_args[@]}" --target cpu -t "$image" .
else
  # The staging folder is the build context: opt/modrwkv in the installed layout.
  [[ -x build/bin/modrwkv ]] || { echo "build-image: build/bin/modrwkv is missing (scripts/build.sh release)" >&2; exit 1; }
  ctx=$stage/context
  rm -rf "$ctx" && mkdir -p "$ctx/opt/modrwkv/bin" "$ctx/opt/modrwkv/share/modrwkv"
  cp build/bin/modrwkv build/bin/modrwkv-loadgen "$ctx/opt/modrwkv/bin/"
  cp assets/rwkv_vocab_v20230424.txt "$ctx/opt/modrwkv/share/modrwkv/"
  scripts/runtime-packages.sh "$ctx"/opt/modrwkv/bin/* >"$ctx/opt/modrwkv/share/modrwkv/runtime-packages.txt"
  nice podman build "${build_args[@]}" --target cpu-prebuilt -t "$image" -f Dockerfile "$ctx"
fi
echo "build-image: $image, $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"

# ---- 3. serve a demo model from it
models=$stage/models
rm -rf "$models" && build/bin/modrwkv make-demo-model --out "$models" >/dev/null
chmod -R a+rX "$models"
name=modrwkv-image-check-$$
log=$stage/container.log
podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
trap 'podman rm -f -t 0 "$name" >/dev/null 2>&1 || true' EXIT
# Published on free loopback ports; the container itself listens on the image's 50051 and 9090.
# As deploy/ runs it: read-only root, no capabilities, no privilege escalation, a tmpfs /tmp.
# No health timer (podman schedules those through systemd, absent here); `podman healthcheck run`
# below runs the image's HEALTHCHECK once.
podman run -d --name "$name" --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges --health-interval disable -v "$PWD/$models:/models:ro" \
  -p 127.0.0.1::50051 -p 127.0.0.1::9090 "$image" > /dev/null 2> >(grep -v 'systemd connection' >&2)
grpc=$(podman port "$name" 50051/tcp | head -1 | sed 's/.*://')
metrics_port=$(podman port "$name" 9090/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 600); do
  podman logs "$name" 2>&1 | grep -q 'msg=ready' && break
  [[ $(podman inspect --format '{{.State.Running}}' "$name") == true ]] ||
    { podman logs "$name"; echo "build-image: the container exited" >&2; exit 1; }
  sleep 0.2
done
podman logs "$name" >"$log" 2>&1
grep -q 'msg=ready' "$log" || { cat "$log"; echo "build-image: not ready after 120 s" >&2; exit 1; }
echo "build-image: container ready (gRPC on 127.0.0.1:$grpc, metrics on :$metrics_port)"
echo "build-image: user $(podman exec "$name" id -u), readiness $(build/bin/modrwkv client health --target "127.0.0.1:$grpc" --timeout 10)"
podman healthcheck run "$name" && echo "build-image: HEALTHCHECK passed"
out=$(build/bin/modrwkv client generate --target "127.0.0.1:$grpc" --prompt "User: hi" \
  --max-tokens 8 --seed 1 --usage --timeout 30 2>&1)
grep -q 'FINISH_REASON_LENGTH; prompt 3 tokens, generated 8 tokens' <<<"$out" ||
  { echo "$out"; echo "build-image: the generation did not finish" >&2; exit 1; }
echo "build-image: generated through the container: $(grep FINISH_REASON <<<"$out")"
scrape=$(curl -sf "127.0.0.1:$metrics_port/metrics")
grep -q '^modrwkv_generated_tokens_total 8$' <<<"$scrape" ||
  { echo "build-image: /metrics does not count the generation" >&2; exit 1; }
podman stop -t 60 "$name" >/dev/null 2> >(grep -v 'systemd connection' >&2)
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
podman logs "$name" 2>&1 | grep -q 'msg=stopped' && [[ $code == 0 ]] ||
  { podman logs "$name" 2>&1 | tail -5; echo "build-image: drain ended with $code" >&2; exit 1; }
echo "build-image: SIGTERM drained the container, exit code 0"
podman rm "$name" >/dev/null 2> >(grep -v 'systemd connection' >&2)
podman image prune -f >/dev/null  # the previous builds' untagged images
