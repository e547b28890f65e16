// Stand-in for llmc/attention.cuh in the CPU simulation of the GPU trainer: see sim_layers.h.
#pragma once
#include "llmc/sim_layers.h"
