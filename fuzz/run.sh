#!/usr/bin/env bash
# Runs Memento's cargo-fuzz targets, each for a bounded time.
#
#   bash fuzz/run.sh                  every target, 60 s each
#   bash fuzz/run.sh search           only targets whose name contains "search"
#   FUZZ_SECONDS=600 bash fuzz/run.sh 10 minutes per target
#
# Needs: rustup with nightly (preferred) or stable (then RUSTC_BOOTSTRAP=1 unlocks the
# unstable flags cargo-fuzz passes), a C++ compiler (libFuzzer), and crates.io for
# `cargo install --locked cargo-fuzz` the first time. Builds in fuzz/target, apart from the
# main target/. Runs under `nice` so that other builds on the machine keep moving.
#
# Inputs: fuzz/seeds/<target>/ (committed, read only) and fuzz/corpus/<target>/ (what the
# fuzzer adds; not committed). Crashes land in fuzz/artifacts/<target>/. Logs in
# fuzz/target/fuzz-logs/.
#
# Exit status: 0 when no target failed, 1 when one found a crash, a leak or a timeout (its
# artifact is printed: fix the bug, then copy the artifact into fuzz/seeds/<target>/ so
# `cargo test -p memento-fuzz-checks` keeps replaying it), 2 when the setup or the build failed.
#
# Other knobs: FUZZ_TOOLCHAIN (nightly / stable), FUZZ_SANITIZER (address / none),
# FUZZ_TIMEOUT (seconds one input may take; default 10), FUZZ_ARGS (more libFuzzer flags).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
fuzz_dir=$PWD
seconds=${FUZZ_SECONDS:-60}
filter=${1:-}
input_timeout=${FUZZ_TIMEOUT:-10}

die() {
    echo "fuzz/run.sh: $*" >&2
    exit 2
}

case $seconds in '' | *[!0-9]*) die "FUZZ_SECONDS must be a whole number of seconds" ;; esac

# --- toolchain -------------------------------------------------------------------------
toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
    if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
cargo=(cargo)
if command -v rustup >/dev/null; then
    cargo=(cargo "+$toolchain")
fi
if [ "$toolchain" != nightly ]; then
    # cargo-fuzz passes -Z flags (sanitizer, coverage); stable accepts them with this.
    export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-address}

# --- cargo-fuzz ------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    nice -n 10 cargo install --locked cargo-fuzz || die "cannot install cargo-fuzz"
fi

# The fuzz crate is its own workspace; it builds with the versions the project locked.
cp ../Cargo.lock Cargo.lock || die "no ../Cargo.lock"
export CARGO_TARGET_DIR="$fuzz_dir/target"

mapfile -t all_targets < <(cargo fuzz list)
targets=()
for target in "${all_targets[@]}"; do
    case $target in *"$filter"*) targets+=("$target") ;; esac
done
[ ${#targets[@]} -gt 0 ] || die "no target matches '$filter' (targets: ${all_targets[*]})"

build_flags=(-O -a -s "$sanitizer")
echo "fuzz/run.sh: building ${targets[*]} with $toolchain (sanitizer $sanitizer)" >&2
for target in "${targets[@]}"; do
    nice -n 10 "${cargo[@]}" fuzz build "${build_flags[@]}" "$target" ||
        die "building $target failed"
done

# --- runs ------------------------------------------------------------------------------
mkdir -p target/fuzz-logs
failed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="target/fuzz-logs/$target.log"
    started=$(date +%s)
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    nice -n 10 "${cargo[@]}" fuzz run "${build_flags[@]}" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    elapsed=$(($(date +%s) - started))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "corpus/$target" -type f | wc -l)
    summary="${runs:-?} runs in ${elapsed} s, coverage ${cov:-?}, corpus $corpus"
    if [ "$status" -eq 0 ]; then
        echo "$target: ok, $summary"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        # The panic message (the line after "panicked at"), else libFuzzer's verdict.
        kind=$(grep -m 1 -A 1 'panicked at' "$log" | tail -n 1 | cut -c 1-160)
        [ -n "$kind" ] || kind=$(grep -m 1 -o 'ERROR: libFuzzer: [a-z-]*' "$log")
        if [ -n "$artifact" ]; then
            case $artifact in /*) ;; *) artifact="$fuzz_dir/${artifact#./}" ;; esac
            echo "$target: FAILED (${kind:-exit $status}) after $summary; input: $artifact; log: $fuzz_dir/$log"
            echo "    reproduce: (cd $fuzz_dir && ${cargo[*]} fuzz run ${build_flags[*]} $target $artifact)"
        else
            echo "$target: FAILED (exit $status, no artifact) after $summary; log: $fuzz_dir/$log"
        fi
    fi
done
exit "$failed"
