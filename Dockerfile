# syntax=docker/dockerfile:1
# faro's services and CLI in one small image: build with the Rust toolchain, run on Debian slim
# as a non-root user. compose.yaml picks the binary per service.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The commit faro_build_info{commit} reports: .git is not in the build context
# (`FARO_COMMIT=$(git rev-parse --short HEAD) docker compose build` passes it).
ARG FARO_COMMIT=unknown
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/faro target/release/faro-dispatcher target/release/faro-worker \
       target/release/faro-balancer target/release/faro-demand-collector /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin faro
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /usr/share/faro/examples/
USER faro
ENV FARO_HTTP_ADDR=0.0.0.0:9090 \
    FARO_LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9090/health || exit 1
CMD ["faro", "--help"]
