# Cairn's container image: a multi-stage build. The `build` stage compiles the release binary
# with the Rust toolchain; the runtime stage is Debian slim with that one binary, running as
# an unprivileged user. docker-compose.yml builds it for several nodes on PostgreSQL + S3.
#
#   docker build -t cairn .
#   docker run -p 5000:5000 -v cairn-data:/data -e CAIRN_CONFIG=/data/cairn.toml cairn
#
# Configuration comes from the environment (CAIRN_DATABASE_URL, CAIRN_<SECTION>__<KEY>) or a
# TOML file named by CAIRN_CONFIG; see config.example.toml. Listening on 0.0.0.0 needs users
# ([[auth.users]]) or `CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE=true`: Cairn refuses to start open to
# the network otherwise. tests/process/compose.rs checks that every COPY source exists.

# The Rust version CI builds with. The runtime stage must be the same Debian release (glibc).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so that a change to Cairn's code does not rebuild
# them: this layer is reused as long as the manifests and Cargo.lock are unchanged.
COPY Cargo.toml Cargo.lock ./
COPY conformance/Cargo.toml conformance/Cargo.toml
RUN mkdir -p src conformance/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs conformance/src/lib.rs \
    && cargo build --release --locked --bin cairn \
    && rm -rf src conformance/src target/release/cairn* target/release/deps/cairn-* \
        target/release/deps/libcairn-* target/release/.fingerprint/cairn-*

# Then Cairn itself. The workspace's test targets are not needed to build the binary.
# build.rs names the commit for `cairn --version` and cairn_build_info; there is no .git here,
# so pass it: docker build --build-arg CAIRN_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG CAIRN_COMMIT=unknown
COPY build.rs build.rs
COPY src src
COPY migrations migrations
COPY conformance/src conformance/src
RUN cargo build --release --locked --bin cairn \
    && install -m 0755 target/release/cairn /usr/local/bin/cairn

FROM debian:bookworm-slim
# ca-certificates: S3 over https (AWS) checks the server against the system's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin cairn \
    && mkdir -p /data /keys \
    && chown cairn:cairn /data /keys
COPY --from=build /usr/local/bin/cairn /usr/local/bin/cairn

# /data: the data directory (SQLite, filesystem blobs, signing keys by default). /keys is an
# empty directory owned by `cairn` where several nodes can mount one volume for their shared
# signing keys ([auth] key_file, [audit] key_file; docker-compose.yml does).
ENV CAIRN_DATA_DIR=/data
VOLUME /data
WORKDIR /data
USER cairn
EXPOSE 5000

# The image has no curl or wget; bash's /dev/tcp sends the request. /healthz answers 200 as
# long as the process serves; /readyz (database and blob store writable) is the deeper check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5000 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["cairn"]
CMD ["serve", "--listen", "0.0.0.0:5000"]
