#!/usr/bin/env bash
# Installs what the project needs on Debian (12+), from Debian's own packages:
#   build-essential         g++ and make for the trainers and tests
#   openmpi-bin libopenmpi-dev   mpirun/mpicxx for data-parallel training on the CPU (and its tests)
#   python3-torch python3-numpy python3-regex python3-matplotlib
#                           the PyTorch reference (train_gpt2.py), the tokenizer's reference, plots
#   libopenblas0-pthread    an optimised BLAS for Debian's torch, which otherwise runs the float64 reference
#                           on the netlib BLAS, ~25x slower (1.8 s against 0.07 s for the GPT-2 classifier
#                           matmul of a 256-token batch; one gpt2v reference state 58 s against 14 s)
#   unicode-data            the Unicode database the tokenizer's tables are generated (and checked) from
#   clang libomp-dev        clang++ and its OpenMP for the CPU emulator of the GPU programs (make emu)
#   clang-format            the formatter tests/style/test_format.sh checks the sources against (version 14)
#   fortunes                fortune-mod's quotations (BSD licence), the second text corpus (make data_fortunes)
# As root it runs apt-get; otherwise it prints the apt-get line to run and exits 1. Nothing is downloaded
# from anywhere but Debian's package archive. The CUDA toolkit (for the GPU trainer) is not installed here.
set -euo pipefail
packages=(build-essential openmpi-bin libopenmpi-dev python3 python3-torch python3-numpy python3-regex
          python3-matplotlib libopenblas0-pthread unicode-data clang libomp-dev clang-format fortunes)

missing=()
command -v g++ >/dev/null && command -v make >/dev/null || missing+=(build-essential)
command -v mpicxx >/dev/null && command -v mpirun >/dev/null || missing+=(openmpi-bin libopenmpi-dev)
# Debian's Python packages import only under /usr/bin/python3
for module in torch numpy regex matplotlib; do
    [ -x /usr/bin/python3 ] && /usr/bin/python3 "$(dirname "$0")/missing_python_modules.py" $module >/dev/null ||
        missing+=("python3-$module")
done
compgen -G "/usr/lib/*/openblas-pthread/libblas.so.3" >/dev/null || missing+=(libopenblas0-pthread)
[ -f /usr/share/unicode/UnicodeData.txt ] || missing+=(unicode-data)
echo 'int main() {}' | clang++ -fopenmp -x c++ - -o /dev/null 2>/dev/null || missing+=(clang libomp-dev)
command -v clang-format-14 >/dev/null || command -v clang-format >/dev/null || missing+=(clang-format)
[ -f /usr/share/games/fortunes/literature ] || missing+=(fortunes)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_deps: everything is installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_deps: missing ${missing[*]}; run as root:"
    echo "  apt-get update && apt-get install -y ${packages[*]}"
    exit 1
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${packages[@]}" >/dev/null
echo "install_deps: done"
