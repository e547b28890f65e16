#!/usr/bin/env bash
# Which loads and matrix instructions a CUDA program's kernels were compiled to, from its machine code
# (cuobjdump --dump-sass; no GPU needed): per kernel whose name matches a pattern, the count of
#   LDSM  ldmatrix: warp-wide loads of matrix fragments from shared memory (what wmma::load_matrix_sync
#         from __shared__ should become)      LDS   other shared-memory loads
#   LDG   global loads                         LD    generic loads (the address space is resolved at run
#                                                    time: slower, and what a wmma load becomes when the
#                                                    compiler cannot prove the pointer is shared)
#   HMMA  tensor-core matrix multiply-adds     STS / STG  shared / global stores
#   bash dev/cuda/sass_counts.sh <program> [kernel name pattern, default: attention]
# Prints one line per matching kernel; exits 1 when no kernel matches or cuobjdump fails.
set -uo pipefail
prog=$1 pattern=${2:-attention}
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)}
[ -x "$CUOBJDUMP" ] || { echo "error: no cuobjdump (looked for $CUOBJDUMP)"; exit 1; }
sass=$(mktemp)
trap 'rm -f "$sass"' EXIT
"$CUOBJDUMP" --dump-sass "$prog" > "$sass" 2>&1 || { echo "error: $CUOBJDUMP --dump-sass $prog failed:"; head -5 "$sass"; exit 1; }
demangle=cat
command -v c++filt >/dev/null && demangle=c++filt
# one line per kernel: name, then the counts (a kernel appears once per architecture in the binary)
awk -v pattern="$pattern" '
    function flush() {
        if (name != "" && name ~ pattern)
            printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", name, c["LDSM"], c["LDS"], c["LDG"], c["LD"], c["HMMA"], c["STS"], c["STG"]
        delete c
    }
    /Function : / { flush(); name = $NF; next }
    /^[ \t]*\/\*[0-9a-f]+\*\// {
        line = $0
        sub(/^[ \t]*\/\*[0-9a-f]+\*\/[ \t]*/, "", line)
        sub(/^@!?U?P[0-9T] /, "", line) # a predicate guard
        split(line, word, /[ .;]/)
        op = word[1]
        if (op == "LDSM" || op == "LDS" || op == "LDG" || op == "LD" || op == "HMMA" || op == "STS" || op == "STG") c[op]++
    }
    END { flush() }
' "$sass" > "$sass.counts"
if [ ! -s "$sass.counts" ]; then
    echo "error: no kernel of $prog matches '$pattern'"
    rm -f "$sass.counts"
    exit 1
fi
printf "%-7s %-7s %-7s %-7s %-7s %-7s %-7s %s\n" LDSM LDS LDG LD HMMA STS STG kernel
while IFS=$'\t' read -r name ldsm lds ldg ld hmma sts stg; do
    printf "%-7s %-7s %-7s %-7s %-7s %-7s %-7s %s\n" "$ldsm" "$lds" "$ldg" "$ld" "$hmma" "$sts" "$stg" \
        "$(echo "$name" | $demangle | cut -c1-90)"
done < "$sass.counts"
rm -f "$sass.counts"
