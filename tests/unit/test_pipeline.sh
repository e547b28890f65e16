#!/usr/bin/env bash
# test_pipeline: the pipeline arithmetic of llmc/pipeline.h (build/tests/test_pipeline: stages, the pieces
# of the parameters each stage holds, both schedules run by a simulator), then planted bugs the program
# must FAIL: 1F1B filling the pipe with one forward too many (a stage then holds more micro-batches than
# the slots it allocates), a stage's layer pieces taken from layer 0 instead of its first layer, the
# extra layers of an uneven split given to the last stages, a split that does not count the
# classifier's work, and a gradient sent to the next stage instead of the previous one.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory build/tests/test_pipeline
build/tests/test_pipeline
mutant() { header_mutant "pipeline/$1" llmc/pipeline.h "$2" tests/unit/test_pipeline.cpp; }
mutant warmup_one_more 's/const int warmup = std::min(num_stages - s - 1, M);/const int warmup = std::min(num_stages - s, M);/'
mutant pieces_from_layer_0 's/sizes\[t\] \/ num_layers \* st.first_layer : 0;/0 : 0;/'
mutant extra_layers_last 's/(s < extra ? 1 : 0)/(s >= num_stages - extra ? 1 : 0)/'
mutant gradient_to_next_stage 's/ex\[i + 1\].send = {PIPE_GRADIENT, a.micro, s - 1}/ex[i + 1].send = {PIPE_GRADIENT, a.micro, s + 1}/'
mutant classifier_not_counted 's/n + head_layers)/n + 0.0)/'
echo "test_pipeline: the arithmetic and 5 planted bugs checked"
