#!/usr/bin/env bash
# The MANIFEST of the bring-up pack (make bringup_pack): what built it, each program's size and the shared
# libraries it asks for at load time (readelf's NEEDED entries: what the loader must find on the GPU
# machine, whatever this machine resolves them to), and the checks a pack must pass:
#   - no program needs libnccl or libmpi (the pack is built with NO_MULTI_GPU=1);
#   - the GPU programs carry sm_90a machine code (cuobjdump --list-elf, where this machine has cuobjdump: the
#     CUDA toolkit here has none; dev/cuda/bringup.sh checks it on the GPU machine), so no PTX is JIT-compiled;
#   - the whole folder is under the limit in MiB.
# Prints the manifest; exits 1 (after printing it) when a check fails.
#   bash dev/cuda/bringup_manifest.sh <pack dir> <limit MiB>
set -uo pipefail
pack=$1 limit_mib=$2
cd "$(dirname "$0")/../.." || exit 1
CUOBJDUMP=${CUOBJDUMP:-/usr/local/cuda/bin/cuobjdump}
failures=0

echo "bring-up pack $pack, made $(date -u '+%Y-%m-%d %H:%M UTC') from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "toolkit: $(/usr/local/cuda/bin/nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*' || echo 'nvcc not found')"
echo "host compiler: $(${CXX:-g++} --version | head -1); glibc $(ldd --version | head -1 | grep -o '[0-9.]*$')"
[ -x "$CUOBJDUMP" ] || echo "architectures: not checked here (no $CUOBJDUMP); bringup.sh checks them on the GPU machine"
echo
printf "%-32s %8s  %s\n" program KiB "libraries it needs (NEEDED)"
while IFS= read -r prog; do
    needed=$(readelf -d "$prog" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    printf "%-32s %8d  %s\n" "${prog#"$pack"/}" $(($(stat -c %s "$prog") / 1024)) "$needed"
    if grep -qE 'libnccl|libmpi' <<<"$needed"; then
        echo "FAIL: ${prog#"$pack"/} needs NCCL or MPI at load time"
        failures=$((failures + 1))
    fi
    # the CPU trainer has no device code; every other program must have sm_90a code
    if [ "${prog##*/}" != train_gpt2 ] && [ -x "$CUOBJDUMP" ] && ! "$CUOBJDUMP" --list-elf "$prog" 2>/dev/null | grep -q sm_90a; then
        echo "FAIL: ${prog#"$pack"/} has no sm_90a machine code ($CUOBJDUMP --list-elf)"
        failures=$((failures + 1))
    fi
done < <(find "$pack" -type f -perm -u+x | sort)
echo
echo "where the GPU machine finds them: the CUDA runtime is linked in statically (nvcc's default); libcublasLt"
echo "comes from that machine's CUDA toolkit or its Python's nvidia-cublas package, and libgomp/libstdc++ from"
echo "its gcc (dev/cuda/bringup.sh looks them up and says where each one was found)"
total=$(du -sb "$pack" | cut -f1)
echo "total $((total / 1024 / 1024)) MiB of at most $limit_mib MiB"
if [ "$total" -gt $((limit_mib * 1024 * 1024)) ]; then
    echo "FAIL: the pack is over $limit_mib MiB"
    failures=$((failures + 1))
fi
[ "$failures" -eq 0 ]
