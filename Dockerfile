# syntax=docker/dockerfile:1
# kaws controller image: a release build on Debian (glibc), run on distroless cc (glibc +
# libgcc, no shell, nonroot). glibc rather than musl because aws-lc-rs (the TLS crypto
# provider) builds with cmake + a C compiler and is simplest and fastest against glibc.
# The exact toolchain controller/symbol-order.txt was profiled with: its function names carry a
# hash of the compiler version, and a list made by another toolchain lays out nothing (the
# binary works, with ~10 MiB more code resident; docs/performance.md, "Code pages").
ARG RUST_VERSION=1.95.0
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kaws --bin kaws \
    && install -D -m 0755 target/release/kaws /out/kaws

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kaws /usr/local/bin/kaws
# 65532 = nonroot in distroless; the chart's securityContext uses the same id.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kaws"]
CMD ["run"]
