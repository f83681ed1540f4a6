# syntax=docker/dockerfile:1
# The ipledger image: the agent and the controller (one binary, `ipledger`) and the CNI
# plugin the agent installs on every node. Build it from the repository's root:
#   docker build -t ipledger:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
# The build steps are scripts/build-release.sh, which CI runs too (there is no Docker
# engine in CI): what this file adds is only the two base images and where files go.

# Debian 12 builder: the agent's glibc then matches the runtime image's.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh /out

# distroless cc: glibc, libgcc, CA certificates, no shell, user 65532 "nonroot".
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ipledger" \
      org.opencontainers.image.description="IP address management for Kubernetes: agent, controller and CNI IPAM plugin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The agent installs the plugin from beside its own executable (`--cni-binary` default).
COPY --from=build /out/ipledger /out/ipledger-cni /usr/local/bin/
# Non-root by default; the chart's agent securityContext runs it as root (it writes the
# host's /opt/cni/bin and /run/ipledger) with every capability dropped.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ipledger"]
