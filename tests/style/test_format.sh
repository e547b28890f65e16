#!/usr/bin/env bash
# Formatting: every C/C++ source of the repository (*.cpp, *.h, *.cu, *.cuh that git tracks, or would: new
# files not ignored count too) is exactly what clang-format 14 makes of it with the repository's
# .clang-format. Lists the files it would change and fails; `make format` formats them. A table the
# formatter would break is fenced with // clang-format off / on. clang-format must be version 14 (other
# versions format some constructs differently): a missing or other clang-format fails, it does not skip
# (scripts/install_deps.sh installs Debian's clang-format, version 14 on Debian 12).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLANG_FORMAT=${CLANG_FORMAT:-}
if [ -z "$CLANG_FORMAT" ]; then
    for c in clang-format-14 clang-format; do
        if command -v "$c" >/dev/null; then CLANG_FORMAT=$c; break; fi
    done
fi
if [ -z "$CLANG_FORMAT" ]; then
    echo "FAIL: clang-format not found: install it (bash scripts/install_deps.sh, Debian package clang-format)"
    exit 1
fi
version=$("$CLANG_FORMAT" --version | sed -n 's/.*clang-format version \([0-9]*\)\..*/\1/p')
if [ "$version" != 14 ]; then
    echo "FAIL: $CLANG_FORMAT is version ${version:-unknown}, not 14: $("$CLANG_FORMAT" --version)"
    exit 1
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cpp' '*.h' '*.cu' '*.cuh' |
        while read -r f; do [ -f "$f" ] && echo "$f"; done)
else # an exported tree: every source outside build/
    mapfile -t files < <(find . -path ./build -prune -o -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \
        -o -name '*.cuh' \) -print | sed 's|^\./||' | sort)
fi
# formatted(FILE): FILE is what the formatter makes of it, with the .clang-format of FILE's folder or above
formatted() { "$CLANG_FORMAT" --style=file "$1" | cmp -s - "$1"; }

# the check can fail: a misformatted copy of a source is caught, the formatted one passes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp .clang-format "$tmp/"
printf 'int  main( ) {return 0;}\n' > "$tmp/bad.cpp"
"$CLANG_FORMAT" --style=file "$tmp/bad.cpp" > "$tmp/good.cpp"
if formatted "$tmp/bad.cpp" || ! formatted "$tmp/good.cpp"; then
    echo "FAIL: the check does not tell a misformatted file from a formatted one"
    exit 1
fi

unformatted=()
for f in "${files[@]}"; do formatted "$f" || unformatted+=("$f"); done
if [ ${#unformatted[@]} -gt 0 ]; then
    echo "FAIL: $CLANG_FORMAT would change ${#unformatted[@]} of ${#files[@]} files (make format, or see the diff with"
    echo "      $CLANG_FORMAT --style=file FILE | diff FILE -):"
    printf '  %s\n' "${unformatted[@]}"
    exit 1
fi
echo "ok: ${#files[@]} C/C++ files are formatted as $CLANG_FORMAT (version $version) formats them"
