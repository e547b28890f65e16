#!/usr/bin/env bash
# llmc/dataloader.h on synthetic shards: order, shuffling, ranks, resume, reset, error messages.
set -euo pipefail
make -s build/test_dataloader
./build/test_dataloader
