# Thin over the project's own scripts: the image builds exactly what CI builds.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./scripts/install-deps.sh \
 && ./scripts/build.sh release -DMODRWKV_CUDA=OFF -DMODRWKV_TESTS=OFF -DMODRWKV_BENCHMARKS=OFF \
 && cmake --install build --prefix /opt/modrwkv

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread libabsl20220623 \
      libgrpc++1.51 libgrpc29 libprotobuf32 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libcivetweb1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/modrwkv /opt/modrwkv
ENV PATH=/opt/modrwkv/bin:$PATH
RUN useradd --system --uid 10001 modrwkv
USER 10001
# gRPC on 50051, Prometheus /metrics on 9090. Mount the model (and its vocabulary) at /models.
EXPOSE 50051 9090
ENTRYPOINT ["modrwkv"]
CMD ["serve", "--model", "/models/model.pth", "--port", "50051", "--metrics-port", "9090"]
