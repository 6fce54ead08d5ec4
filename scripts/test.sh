#!/bin/sh
# The README's second command: installs what is missing, builds every
# variant, and runs every test: unit tests under ASan+UBSan and valgrind,
# each fuzz target briefly on its kept corpus, and the integration suite
# (real clients against the real binary, built with ASan+UBSan) on loopback.
set -eu
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
JOBS="$(nproc)"

./scripts/setup.sh

echo "== docs: estafeta.conf(5) and doc/config.md describe every directive and match src/lib/limits.c"
/usr/bin/python3 scripts/man-limits.py --check

echo "== build (release, asan, fuzz)"
make -j"$JOBS" all unit fault >/dev/null
make -j"$JOBS" VARIANT=asan all unit >/dev/null
make -j"$JOBS" VARIANT=fuzz fuzz >/dev/null

echo "== unit tests (ASan+UBSan)"
failed=0
for t in build/asan/tests/test_*; do
    [ -x "$t" ] || continue
    if ! ASAN_OPTIONS=detect_leaks=1 "$t"; then
        echo "FAILED: $t"
        failed=1
    fi
done

echo "== unit tests (valgrind)"
for t in build/release/tests/test_*; do
    [ -x "$t" ] || continue
    if ! valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite "$t" >/dev/null; then
        echo "FAILED under valgrind: $t"
        failed=1
    fi
done

echo "== fuzz targets (${FUZZ_SECONDS}s each)"
for f in build/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f" | sed 's/^fuzz_//')
    corpus="tests/fuzz/corpus/$name"
    scratch=$(mktemp -d)
    if ! "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 \
            "$scratch" "$corpus" >"$scratch.log" 2>&1; then
        echo "FAILED: $f"
        tail -40 "$scratch.log"
        failed=1
    else
        echo "fuzz_$name: ok: $(tail -1 "$scratch.log")"
    fi
    rm -rf "$scratch" "$scratch.log"
done

if [ "$failed" -ne 0 ]; then
    echo "unit or fuzz tests failed"
    exit 1
fi

echo "== integration tests (ASan+UBSan binary)"
ESTAFETA_BIN="$PWD/build/asan/estafeta" exec /usr/bin/python3 -m pytest -q \
    -p no:cacheprovider tests/integration
