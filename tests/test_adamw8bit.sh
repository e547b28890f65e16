#!/usr/bin/env bash
# 8-bit AdamW (llmc/adamw8bit.h) against a float64 AdamW: one step, tracking, partial blocks, determinism.
set -euo pipefail
make -s build/test_adamw8bit
./build/test_adamw8bit
