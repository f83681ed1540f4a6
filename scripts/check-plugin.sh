#!/usr/bin/env bash
# Refuses a plugin binary that would not run on every node: it must be an ELF executable,
# statically linked (no program interpreter, no shared library needed), under 5 MB, and
# answer CNI VERSION. Usage: scripts/check-plugin.sh PATH
set -euo pipefail
plugin="${1:?usage: $0 PATH}"
fail() { echo "check-plugin: $plugin: $*" >&2; exit 1; }

[ -f "$plugin" ] && [ -x "$plugin" ] || fail "not an executable file"
[ "$(head -c 4 "$plugin" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || fail "not an ELF file"
# A dynamic executable names its loader (INTERP) and its libraries (NEEDED); a static-pie
# one, what +crt-static gives, has a dynamic section but neither.
if readelf -lW "$plugin" | grep -q 'INTERP'; then
    fail "dynamically linked: it names a program interpreter ($(readelf -lW "$plugin" | grep -o '/[^]]*ld[^]]*'))"
fi
needed="$(readelf -dW "$plugin" | grep '(NEEDED)' || true)"
[ -z "$needed" ] || fail "needs shared libraries: $needed"
size="$(stat -c %s "$plugin")"
[ "$size" -lt $((5 * 1024 * 1024)) ] || fail "$size bytes: over the 5 MB limit (is it stripped?)"
version="$(CNI_COMMAND=VERSION "$plugin" </dev/null)" || fail "CNI VERSION failed"
case "$version" in
    *'"supportedVersions"'*) ;;
    *) fail "CNI VERSION printed no supportedVersions: $version" ;;
esac
echo "check-plugin: $plugin: static ELF executable, $size bytes, answers VERSION"
