#!/usr/bin/env bash
# llmc/utils.h: atomic checkpoint writes survive an early return and a SIGKILL mid-write.
set -euo pipefail
build/test_utils
