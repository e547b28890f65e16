// Stand-in for llmc/global_norm.cuh in the CPU simulation of the GPU trainer: see sim_layers.h.
#pragma once
#include "llmc/sim_layers.h"
