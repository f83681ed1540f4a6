#!/usr/bin/env bash
# Builds what the container image ships, exactly as the Dockerfile does (it runs this
# script) and as CI does (so the image's build cannot rot unseen without a Docker engine):
#   OUT/ipledger      the agent and the controller (without the emulator and the sandbox)
#   OUT/ipledger-cni  the CNI plugin, statically linked and stripped
# The agent copies the plugin onto every node's /opt/cni/bin, where it runs under the
# host's libc rather than the image's: linked statically it runs on any x86_64 Linux host,
# whatever its glibc. It reaches the agent over a unix socket only (no DNS, no NSS), which
# is what makes a static glibc build safe.
# Usage: scripts/build-release.sh OUT
set -euo pipefail
out="${1:?usage: $0 OUT}"
cd "$(dirname "$0")/.."
mkdir -p "$out"

# The node image leaves the emulator out (README, "Build").
cargo build --release --locked -p ipledger --no-default-features --bin ipledger
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, and puts
# the static build in its own directory (target/<triple>/release).
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --release --locked -p ipledger-cni --bin ipledger-cni --target "$triple"

# The release profile keeps line tables for the tests' backtraces (115 MB); the image keeps
# the symbols (a panic's backtrace still names functions) and drops the rest.
strip --strip-debug -o "$out/ipledger" target/release/ipledger
chmod 0755 "$out/ipledger"
install -m 0755 "target/$triple/release/ipledger-cni" "$out/ipledger-cni"
scripts/check-plugin.sh "$out/ipledger-cni"
