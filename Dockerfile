# Builds the leadstream service binaries; used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/leadstream-collector /src/target/release/leadstream-generator /src/target/release/leadstream-aggregator /usr/local/bin/
COPY config ./config
USER nobody
ENTRYPOINT ["leadstream-collector"]
