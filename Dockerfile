# goprox: multi-stage build. The build stage runs the same `cargo build --release --locked` as
# CI; the runtime image holds the binary and CA certificates only.
#
#   docker build -t goprox .
#   docker run -p 8080:8080 -v goprox-data:/data goprox
#   docker run -p 8080:8080 -e GOPROX_STORE=s3://bucket/goprox -e AWS_REGION=... goprox
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin goprox

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --shell /usr/sbin/nologin goprox \
 && mkdir -p /data && chown goprox /data
COPY --from=build /src/target/release/goprox /usr/local/bin/goprox
USER goprox
WORKDIR /data
ENV GOPROX_LISTEN=0.0.0.0:8080 GOPROX_STORE=/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/goprox"]
CMD ["serve"]
