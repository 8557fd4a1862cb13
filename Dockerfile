# thinkgate: a multi-stage build into a small, non-root runtime image.
#
#   docker build -t thinkgate .
#   docker run -p 8080:8080 -e THINKGATE_API_KEY=... -e OPENAI_API_KEY=... \
#     -v "$PWD/deploy/kubernetes/thinkgate.toml:/etc/thinkgate/thinkgate.toml:ro" thinkgate
#
# The steps are the ones CI proves: `cargo build --release --locked` of the `thinkgate`
# binary (the test suite builds the same workspace from the same Cargo.lock), and
# `thinkgate serve --config <file>` on deploy/kubernetes/thinkgate.toml (tests/e2e/deploy.rs
# runs the binary on that file and probes /healthz and /readyz).

FROM rust:1.95-slim-bookworm AS build
# jemalloc is built from C sources.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin thinkgate \
 && strip target/release/thinkgate

FROM debian:bookworm-slim
# CA roots for https:// upstreams and collectors (the binary also carries webpki roots).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin thinkgate
COPY --from=build /src/target/release/thinkgate /usr/local/bin/thinkgate
COPY deploy/kubernetes/thinkgate.toml /etc/thinkgate/thinkgate.toml
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/thinkgate"]
CMD ["serve", "--config", "/etc/thinkgate/thinkgate.toml"]
