#!/usr/bin/env bash
# The crates' dependency arrows as DESIGN.md draws them ("Code layout"): fails when a
# crate depends, directly or through another crate, on what it must not.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
# deny PACKAGE CRATE...: none of CRATE may be among PACKAGE's normal dependencies.
deny() {
    local package=$1
    shift
    local tree
    tree=$(cargo tree --locked -p "$package" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
    for crate in "$@"; do
        if grep -qx "$crate" <<<"$tree"; then
            echo "layout: $package depends on $crate (cargo tree -p $package -i $crate shows the path)" >&2
            failed=1
        fi
    done
}

# The pure core: no Kubernetes types, no runtime, no I/O stack.
deny ipledger-core kube kube-client k8s-openapi tokio hyper
# The plugin is exec'd per attachment and must start fast.
deny ipledger-cni kube kube-client k8s-openapi tokio hyper
# The emulator knows nothing of ipledger.
deny kube-emulator ipledger ipledger-core ipledger-cni
# A node image can be built without the emulator.
tree=$(cargo tree --locked -p ipledger --no-default-features -e normal --prefix none --format '{p}' | awk '{print $1}')
if grep -qx kube-emulator <<<"$tree"; then
    echo "layout: ipledger without default features still depends on kube-emulator" >&2
    failed=1
fi
exit "$failed"
