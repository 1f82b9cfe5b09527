# The service's container images, built from the project's own scripts. Targets:
#   cpu           Debian 12 slim runtime; compiled here with the CPU backend (15-20 min on 2 cores)
#   cuda          CUDA runtime base (it provides cuBLAS, which the server opens at run time);
#                 compiled here with -DMODRWKV_CUDA=ON and serving with --device cuda
#                 (MODRWKV_DEVICE); the backend's tests pass on an H200 (docs/engine.md)
#   cpu-prebuilt  the cpu runtime around binaries built outside the image: the build context is the
#                 staging folder that `scripts/build-image.sh` makes from build/bin (opt/modrwkv/...),
#                 not the repository; CI builds and runs it without recompiling
# Runtime libraries are not listed by hand: scripts/runtime-packages.sh resolves the binaries' shared
# libraries with ldd and names the packages that own them (dpkg -S); the runtime stage installs those.
# Base images are pinned by exact tag (a registry digest can replace the tag where one is reachable);
# scripts/build-image.sh makes the Debian ones from the Debian archive with debootstrap and passes
# them in as build arguments.
#   podman build --target cpu -t modrwkv:cpu .
#   podman run -v /srv/models/rwkv7-g1-0.4b:/models:ro -p 50051:50051 -p 9090:9090 modrwkv:cpu
#       (MODRWKV_MODEL=/models/model.pth by default: a checkpoint, or a model directory with
#       modrwkv-model.json; every flag is also an environment variable MODRWKV_<FLAG>)

ARG DEBIAN_IMAGE=docker.io/library/debian:12.15
ARG DEBIAN_SLIM_IMAGE=docker.io/library/debian:12.15-slim
# NVIDIA publishes no Debian CUDA images; Ubuntu 24.04 carries the same gRPC 1.51, Abseil 20220623
# and protobuf 3.21 as Debian 12, so the same scripts build there.
ARG CUDA_DEVEL_IMAGE=docker.io/nvidia/cuda:12.6.3-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04

# ---- build stages: dependencies first (cached until install-deps.sh changes), then the sources

FROM ${DEBIAN_IMAGE} AS cpu-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*

FROM cpu-deps AS cpu-build
WORKDIR /src
COPY . .
RUN ./scripts/build.sh release -DMODRWKV_CUDA=OFF -DMODRWKV_TESTS=OFF -DMODRWKV_BENCHMARKS=OFF \
 && cmake --install build --prefix /opt/modrwkv --strip \
 && ./scripts/runtime-packages.sh /opt/modrwkv/bin/* >/opt/modrwkv/share/modrwkv/runtime-packages.txt

FROM ${CUDA_DEVEL_IMAGE} AS cuda-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*

FROM cuda-deps AS cuda-build
WORKDIR /src
COPY . .
RUN ./scripts/build.sh release -DMODRWKV_CUDA=ON -DMODRWKV_TESTS=OFF -DMODRWKV_BENCHMARKS=OFF \
 && cmake --install build --prefix /opt/modrwkv --strip \
 && ./scripts/runtime-packages.sh /opt/modrwkv/bin/* >/opt/modrwkv/share/modrwkv/runtime-packages.txt

# ---- runtime stages: a non-root user, the model at /models, gRPC on 50051, /metrics on 9090

FROM ${DEBIAN_SLIM_IMAGE} AS cpu-base
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modrwkv \
 && mkdir -p /models
ENV PATH=/opt/modrwkv/bin:$PATH \
    MODRWKV_MODEL=/models/model.pth \
    MODRWKV_PORT=50051 \
    MODRWKV_METRICS_PORT=9090
EXPOSE 50051 9090
# Readiness (service modrwkv.v1.Inference): SERVING once the model is loaded and warmed up, off
# while draining. The start period covers loading a large checkpoint.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["/bin/sh", "-c", "exec modrwkv client health --target 127.0.0.1:${MODRWKV_PORT} --timeout 4"]
ENTRYPOINT ["modrwkv"]
CMD ["serve"]

FROM cpu-base AS cpu-prebuilt
COPY opt/modrwkv/share/modrwkv/runtime-packages.txt /tmp/runtime-packages.txt
# hadolint ignore=DL3008
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY opt/modrwkv /opt/modrwkv
USER 10001:10001

FROM ${CUDA_RUNTIME_IMAGE} AS cuda
COPY --from=cuda-build /opt/modrwkv/share/modrwkv/runtime-packages.txt /tmp/runtime-packages.txt
# hadolint ignore=DL3008
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin modrwkv \
 && mkdir -p /models
COPY --from=cuda-build /opt/modrwkv /opt/modrwkv
ENV PATH=/opt/modrwkv/bin:$PATH \
    MODRWKV_MODEL=/models/model.pth \
    MODRWKV_PORT=50051 \
    MODRWKV_METRICS_PORT=9090 \
    MODRWKV_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["/bin/sh", "-c", "exec modrwkv client health --target 127.0.0.1:${MODRWKV_PORT} --timeout 4"]
USER 10001:10001
ENTRYPOINT ["modrwkv"]
CMD ["serve"]

# The last stage is what a build without --target makes.
FROM cpu-base AS cpu
# The package list comes before the binaries so that a code change reuses the package layer.
COPY --from=cpu-build /opt/modrwkv/share/modrwkv/runtime-packages.txt /tmp/runtime-packages.txt
# Package names carry the libraries' SONAMEs; versions are the archive's current ones (pinning them
# would break on the next security update), hence DL3008.
# hadolint ignore=DL3008
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=cpu-build /opt/modrwkv /opt/modrwkv
USER 10001:10001
