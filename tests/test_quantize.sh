#!/usr/bin/env bash
# Quantization schemes (llmc/quantize.h) against float64 references: error bounds, edge cases, codebooks.
set -euo pipefail
make -s build/test_quantize
./build/test_quantize
# a NaN input must stop a caller that uses quantize_check_status, with a message naming the block
if msg=$(./build/test_quantize --nan-block-3 2>&1); then
    echo "FAIL quantize_check_status did not fail on a NaN block"
    exit 1
fi
if ! grep -q "test tensor: block 3 holds a NaN or Inf" <<<"$msg"; then
    echo "FAIL unexpected message from quantize_check_status: $msg"
    exit 1
fi
echo "ok   quantize_check_status fails naming the block: $msg"
