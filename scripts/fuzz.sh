#!/usr/bin/env bash
# `make fuzz`: coverage-guided fuzzing (libFuzzer + AddressSanitizer) of the parsers that read what
# clients, apps and Redis send. docs/fuzzing.md says how to use it and what to do with a finding.
#   FUZZ=http-request,json   only these targets (default: every one; `make fuzz FUZZ=list` names them)
#   FUZZ_SECONDS=60          per target
# Each target starts from its seeds in Tests/FuzzTests/Corpus/<target> and keeps what it learns in
# .build-fuzz/corpus/<target>. A crash or a broken property stops that target: the input is saved as
# .build-fuzz/findings/<target>/crash-<sha1>, and the script exits 1 after the other targets.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
SCRATCH=.build-fuzz
BIN="$SCRATCH/debug/stickylab-fuzz"

case "$SECONDS_PER_TARGET" in
    '' | *[!0-9]*) echo "fuzz: FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac

# Every target has a seed folder; the names come from there (Sources/FuzzTargets lists the same ones,
# and FuzzTests checks that both agree).
ALL=$(ls Tests/FuzzTests/Corpus)
if [ "${FUZZ:-}" = list ]; then echo "$ALL"; exit 0; fi
TARGETS=${FUZZ:-$ALL}
TARGETS=${TARGETS//,/ }
for target in $TARGETS; do
    if [ ! -d "Tests/FuzzTests/Corpus/$target" ]; then
        echo "fuzz: '$target' is not a fuzz target; targets: $(echo $ALL)" >&2
        exit 2
    fi
done

# Coverage for libFuzzer and AddressSanitizer on every Swift module; libFuzzer's driver without its
# main (SwiftPM names the executable's entry point itself; Sources/stickylab-fuzz calls the driver).
FUZZER_LIB=$(ls "$(dirname "$(dirname "$(command -v swiftc)")")"/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null | head -1)
if [ -z "$FUZZER_LIB" ]; then
    echo "fuzz: libFuzzer (libclang_rt.fuzzer_no_main-x86_64.a) is not in this Swift toolchain" >&2
    exit 2
fi
echo "fuzz: building stickylab-fuzz with libFuzzer and AddressSanitizer in $SCRATCH (the first build takes several minutes)"
mkdir -p "$SCRATCH"
if ! STICKYLAB_FUZZ=1 swift build --scratch-path "$SCRATCH" --product stickylab-fuzz \
    -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,pc-table,inline-8bit-counters,trace-cmp \
    -Xlinker "$FUZZER_LIB" > "$SCRATCH/build.log" 2>&1; then
    # The linker's many "Cannot export local symbol" warnings about ASan's own symbols are noise.
    grep -v "Cannot export local symbol" "$SCRATCH/build.log" | tail -20 >&2
    echo "fuzz: the build failed (the whole log: $SCRATCH/build.log)" >&2
    exit 2
fi

failed=()
for target in $TARGETS; do
    corpus="$SCRATCH/corpus/$target"
    findings="$SCRATCH/findings/$target"
    mkdir -p "$corpus" "$findings"
    dictionary=()
    if [ -f "Tests/FuzzTests/Dictionaries/$target.dict" ]; then dictionary=(-dict="Tests/FuzzTests/Dictionaries/$target.dict"); fi
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s (corpus $corpus)"
    if ! STICKYLAB_FUZZ_TARGET="$target" ASAN_OPTIONS=detect_leaks=0 SWIFT_BACKTRACE=enable=no "$BIN" \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 "${dictionary[@]}" \
        -artifact_prefix="$findings/" "$corpus" "Tests/FuzzTests/Corpus/$target" > "$SCRATCH/$target.log" 2>&1; then
        failed+=("$target")
        echo "fuzz: $target FAILED: see $SCRATCH/$target.log; the input is in $findings/" >&2
        grep -E "Fatal error|runtime failure|precondition failed|==ERROR|deadly signal" "$SCRATCH/$target.log" | head -3 >&2 || true
    else
        grep -E "^stat::number_of_executed_runs|^#[0-9]+.*DONE" "$SCRATCH/$target.log" | tail -1 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}. Reproduce one with: STICKYLAB_FUZZ_TARGET=<target> $BIN <input file>" >&2
    exit 1
fi
echo "fuzz: no crash and no broken property in: $(echo $TARGETS)"
