#!/usr/bin/env bash
# Quantization schemes (llmc/quantize.h) against float64 references: error bounds, edge cases, codebooks.
set -euo pipefail
make -s build/test_quantize
./build/test_quantize
