# Thin over the project's own scripts: the image builds exactly what CI builds.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./scripts/install-deps.sh \
 && ./scripts/build.sh release -DMODRWKV_CUDA=OFF -DMODRWKV_TESTS=OFF -DMODRWKV_BENCHMARKS=OFF \
 && cmake --install build --prefix /opt/modrwkv

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread libabsl20220623 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/modrwkv /opt/modrwkv
ENV PATH=/opt/modrwkv/bin:$PATH
RUN useradd --system --uid 10001 modrwkv
USER 10001
ENTRYPOINT ["modrwkv"]
CMD ["--help"]
