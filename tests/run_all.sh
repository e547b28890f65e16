#!/usr/bin/env bash
# Runs every test script tests/test_*.sh (each one test; exit 0 = pass) and prints a closing
# "N passed, M failed" line. Exits non-zero when any test failed.
cd "$(dirname "$0")/.." || exit 1
passed=0
failed=0
failed_names=()
for t in tests/test_*.sh; do
    name=$(basename "$t" .sh)
    echo "=== $name"
    start=$(date +%s)
    if bash "$t"; then
        passed=$((passed + 1))
        echo "--- PASS $name ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "--- FAIL $name ($(($(date +%s) - start)) s)"
    fi
done
[ "$failed" -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
