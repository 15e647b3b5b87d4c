# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as a non-root user in a small Debian image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin dmpushd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/dmpushd --create-home dmpushd
COPY --from=build /src/target/release/dmpushd /usr/local/bin/dmpushd
COPY config/dmpushd.toml /etc/dmpushd/dmpushd.toml
# Numeric, so Kubernetes runAsNonRoot can verify it without resolving names.
USER 10001:10001
WORKDIR /var/lib/dmpushd
ENV DMPUSHD_CONFIG=/etc/dmpushd/dmpushd.toml \
    DMPUSHD__SERVER__LISTEN=0.0.0.0:8080 \
    DMPUSHD__STORE__URL=sqlite:///var/lib/dmpushd/dmpushd.db
EXPOSE 8080
VOLUME ["/var/lib/dmpushd"]
ENTRYPOINT ["/usr/local/bin/dmpushd"]
CMD ["serve"]
