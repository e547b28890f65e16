# Makefile for the GPT-2 trainer.
#
#   make               CPU trainer, its test and the tokenizer tool
#   make data          Tiny Shakespeare token shards + llm.c's gpt2_tokenizer.bin
#   make test          every test that runs on a CPU-only machine (prints "N passed, M failed")
#   make train_gpt2cu  the GPU trainer (bf16; PRECISION=FP32 for the fp32 build)
#   make cuda          every CUDA target, for sm_80 and sm_90 (compiles without a GPU)

CXX ?= g++
PYTHON ?= /usr/bin/python3
NVCC ?= /usr/local/cuda/bin/nvcc

# -march=native where the compiler accepts it, a portable x86-64-v2 / generic build otherwise.
NATIVE_FLAG := $(shell $(CXX) -march=native -x c++ -c /dev/null -o /dev/null >/dev/null 2>&1 && echo -march=native)
CXXFLAGS ?= -O3 $(NATIVE_FLAG)
CXXFLAGS += -std=c++17 -Wall -Wextra -fopenmp -I.
LDLIBS += -lm -fopenmp

# headers every C++ program depends on (a change rebuilds everything; simple and always correct)
HEADERS := $(wildcard llmc/*.h)

TEST_BINS :=
CUDA_BINS :=

.PHONY: all data test cuda clean format

all: train_gpt2 test_gpt2 tokenizer

# ---------------------------------------------------------------------------------------------------
# tokenizer and data preparation

# ---------------------------------------------------------------------------------------------------
# CPU trainer and its test
TEST_BINS += build/test_dataloader build/test_schedulers
build/test_dataloader: tests/test_dataloader.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)
build/test_schedulers: tests/test_schedulers.cpp $(HEADERS)
	@mkdir -p build
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

# ---------------------------------------------------------------------------------------------------
# quantization and 8-bit AdamW

# ---------------------------------------------------------------------------------------------------
# data parallel / ZeRO (MPI on the CPU)

# ---------------------------------------------------------------------------------------------------
# CUDA

# ---------------------------------------------------------------------------------------------------

test: all $(TEST_BINS)
	bash tests/run_all.sh

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -f train_gpt2 test_gpt2 tokenizer $(TEST_BINS) $(CUDA_BINS)
	rm -rf build
