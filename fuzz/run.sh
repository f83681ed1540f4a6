#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time on the checked-in corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#
# Exits non-zero when a target crashes (panic, failed invariant, timeout, OOM) and
# prints the path and contents of the input that did it. The corpus is copied to a
# temporary directory first, so the repository is not modified.
#
# Needs only the stable toolchain: libFuzzer's coverage instrumentation uses stable
# -C flags, so no -Z flag and no RUSTC_BOOTSTRAP (that is why --sanitizer none; the
# crates are safe Rust, #![forbid(unsafe_code)], and AddressSanitizer would need
# RUSTC_BOOTSTRAP=1 and run ~5x slower).
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: fuzz/target, git-ignored)
#   CARGO_BUILD_JOBS   parallel rustc jobs (default: 2)
#   FUZZ_OPT_LEVEL     opt-level of the instrumented build (default: 1; it builds in
#                      about half the time of 3 and runs ~35% fewer execs/s: the right
#                      trade for short CI runs; use 3 for long sessions)
#   FUZZ_WORK_DIR      where corpus copies, logs and crash inputs go (default: mktemp)
#   FUZZ_ARGS          extra libFuzzer flags for every target, e.g. "-max_len=8192"
set -euo pipefail

secs=${1:-30}
shift || true
case $secs in '' | *[!0-9]*) echo "run.sh: seconds must be a number, got '$secs'" >&2; exit 2 ;; esac

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$fuzz_dir")
cargo_fuzz_version=0.13.2

say() { printf '==> %s\n' "$*"; }
t0=$(date +%s)

# --- tools -----------------------------------------------------------------------
# libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
  && ! command -v clang++ >/dev/null 2>&1; then
  say "installing g++ (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  say "installing cargo-fuzz $cargo_fuzz_version"
  cargo install --locked --quiet cargo-fuzz --version "$cargo_fuzz_version"
fi
t1=$(date +%s)
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd "$repo_dir" && cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

# --- build -----------------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$fuzz_dir/target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${FUZZ_OPT_LEVEL:-1}
unset RUSTC_BOOTSTRAP
triple=$(rustc -vV | sed -n 's/^host: //p')
build_log=$(mktemp "${TMPDIR:-/tmp}/ipledger-fuzz-build.XXXXXX")
one=()
[ ${#targets[@]} -eq 1 ] && one=("${targets[0]}")
say "building ${targets[*]} (sanitizer none, debug assertions, opt-level $CARGO_PROFILE_RELEASE_OPT_LEVEL) in $CARGO_TARGET_DIR"
if ! (cd "$repo_dir" && cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer none \
  --debug-assertions --target "$triple" --target-dir "$CARGO_TARGET_DIR" "${one[@]}") \
  >"$build_log" 2>&1; then
  grep -v '^ *\(Compiling\|Downloaded\|Downloading\) ' "$build_log" | tail -60
  echo "run.sh: build failed (log $build_log)" >&2
  exit 1
fi
grep -E '^ *(Finished|warning)' "$build_log" | sed 's/^ */    /' || true
rm -f "$build_log"
bin_dir=$CARGO_TARGET_DIR/$triple/release
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "run.sh: build failed: no $bin_dir/$t" >&2; exit 1; }
done
t2=$(date +%s)

# --- run -------------------------------------------------------------------------
work=${FUZZ_WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ipledger-fuzz.XXXXXX")}
mkdir -p "$work"
passed=0
failed=0
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t
  artifacts=$work/artifacts/$t
  log=$work/$t.log
  mkdir -p "$corpus" "$artifacts"
  [ -d "$fuzz_dir/corpus/$t" ] && cp -R "$fuzz_dir/corpus/$t/." "$corpus/"
  dict=()
  [ -f "$fuzz_dir/dict/$t.dict" ] && dict=(-dict="$fuzz_dir/dict/$t.dict")
  say "fuzzing $t for ${secs}s (corpus $(ls "$corpus" | wc -l) inputs)"
  status=0
  # shellcheck disable=SC2086
  "$bin_dir/$t" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^Done ' "$log" | sed 's/^/    /' || true
  if [ "$status" -eq 0 ]; then
    passed=$((passed + 1))
    continue
  fi
  failed=$((failed + 1))
  echo "FAIL: $t exited $status; log: $log"
  grep -E -A15 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" | grep -v '^ *[0-9]*: 0x' | head -40 || tail -40 "$log"
  for input in "$artifacts"/*; do
    [ -f "$input" ] || continue
    echo "crashing input: $input ($(wc -c <"$input") bytes)"
    echo "--- contents (cat -v, first 4 KiB) ---"
    head -c 4096 "$input" | cat -v
    echo
    echo "--- base64 ---"
    base64 -w0 <"$input" | head -c 8192
    echo
    echo "reproduce: $bin_dir/$t $input"
  done
done
t3=$(date +%s)

say "install $((t1 - t0))s, build $((t2 - t1))s, fuzz $((t3 - t2))s; work dir $work"
if [ "$failed" -eq 0 ] && [ -z "${FUZZ_WORK_DIR:-}" ]; then
  rm -rf "$work"
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
