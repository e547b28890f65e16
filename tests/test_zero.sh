#!/usr/bin/env bash
# ZeRO-1 sharding arithmetic (llmc/zero.h): layouts, per-tensor shard ranges, memory formulas.
set -euo pipefail
cd "$(dirname "$0")/.."
./test_zero
