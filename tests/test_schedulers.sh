#!/usr/bin/env bash
# llmc/schedulers.h, rand.h, sampler.h, logger.h against independent formulas and statistics.
set -euo pipefail
make -s build/test_schedulers
./build/test_schedulers
