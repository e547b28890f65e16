# Makefile for the GPT-2 trainer.
#
#   make               CPU trainer, its test and the tokenizer tool
#   make data          Tiny Shakespeare token shards + llm.c's gpt2_tokenizer.bin
#   make test          every test that runs on a CPU-only machine (prints "N passed, M failed"); CI runs it
#   make test-fast     the unit tests and test_gpt2: the inner loop (under a minute)
#   make train_gpt2cu  the GPU trainer (bf16; PRECISION=FP32 for the fp32 build)
#   make cuda          every CUDA target, for sm_80 and sm_90 (compiles without a GPU)
#   make bringup_pack  what dev/cuda/bringup.sh runs on a lent GPU, in build/bringup (one GPU, sm_90a)
# Knobs of the CUDA targets:
#   CUDA_ARCH=...      the GPU architectures, e.g. 90 (H100/H200), 90a (Hopper with its own wgmma and
#                      setmaxnreg code: runs on sm_90 parts only), 80 (A100), "80 90" (the default)
#   NO_MULTI_GPU=1     one GPU: no NCCL and no MPI at build or load time (llmc/nccl_none.h)
#   NO_MPI=1           no MPI (the CPU trainer; the GPU trainer keeps NCCL, bootstrapped with -pi tcp|fs)
#   CUDA_BUILD=dir     where the CUDA programs go (dir/train_gpt2cu, dir/dev/cuda/*_check); default: here

CXX ?= g++
CUDA_ARCH ?= 80 90
CUDA_ARCHS = $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
CUDA_BUILD ?=
CUDA_OUT = $(if $(CUDA_BUILD),$(CUDA_BUILD)/)
PYTHON ?= /usr/bin/python3
NVCC ?= /usr/local/cuda/bin/nvcc

# -march=native where the compiler accepts it, a portable x86-64-v2 / generic build otherwise.
NATIVE_FLAG := $(shell $(CXX) -march=native -x c++ -c /dev/null -o /dev/null >/dev/null 2>&1 && echo -march=native)
CXXFLAGS ?= -O3 $(NATIVE_FLAG)
CXX_COMMON := -std=c++17 -Wall -Wextra -Wno-psabi -fno-math-errno -fno-trapping-math -fopenmp -I.
CXXFLAGS += $(CXX_COMMON)
LDLIBS += -lm -fopenmp

# headers every C++ program depends on (a change rebuilds everything; simple and always correct)
HEADERS := $(wildcard llmc/*.h)
# what the dev/cuda kernel checks include besides llmc/: their common header, the layers' double references
CHECK_HEADERS := dev/cuda/check_common.h tests/common/reference.h $(wildcard dev/cuda/*.cuh)
# what test_gpt2.cpp and test_gpt2.cu include besides their trainer: CHECK and the debug state's reader
TEST_GPT2_HEADERS := tests/common/test_common.h tests/common/debug_state.h

CUDA_BINS :=

.PHONY: all data test test-fast cuda clean format

all: train_gpt2 test_gpt2 tokenizer

# ---------------------------------------------------------------------------------------------------
# tokenizer and data preparation

tokenizer: dev/data/tokenizer.cpp $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

prepro_tinyshakespeare: dev/data/prepro_tinyshakespeare.cpp dev/data/prepro_shards.h $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

prepro_fortunes: dev/data/prepro_fortunes.cpp dev/data/prepro_shards.h $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

# throughput benchmark, not part of `all`: ./bench_tokenizer (results in dev/results/tokenizer_bench.txt)
bench_tokenizer: dev/bench/bench_tokenizer.cpp $(HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

# the CPU trainer's benchmarks, not part of `all`: dev/bench/bench_cpu.sh runs them
# (results in dev/results/cpu_bench.txt)
CPU_BENCHES := build/fma_peak build/bench_matmul_cpu build/bench_cpu_parts
.PHONY: cpu_benches
cpu_benches: $(CPU_BENCHES)
build/fma_peak build/bench_matmul_cpu: build/%: dev/bench/%.cpp $(HEADERS)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)
build/bench_cpu_parts: dev/bench/bench_cpu_parts.cpp train_gpt2.cpp $(HEADERS)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

# `make data`: real file targets (one grouped recipe makes all three), so it is a no-op when up to date
TINYSHAKESPEARE_DATA := data/tinyshakespeare/tiny_shakespeare_val.bin data/tinyshakespeare/tiny_shakespeare_train.bin \
                        data/gpt2_tokenizer.bin
data: $(TINYSHAKESPEARE_DATA)
$(TINYSHAKESPEARE_DATA) &: prepro_tinyshakespeare data/tinyshakespeare/input.txt data/gpt2/encoder.json data/gpt2/vocab.bpe
	./prepro_tinyshakespeare

# `make data_fortunes`: the second corpus, from Debian's package `fortunes` (scripts/install_deps.sh)
FORTUNES_DATA := data/fortunes/fortunes_val.bin data/fortunes/fortunes_train.bin
.PHONY: data_fortunes
data_fortunes: $(FORTUNES_DATA)
$(FORTUNES_DATA) &: prepro_fortunes data/gpt2/encoder.json data/gpt2/vocab.bpe
	./prepro_fortunes

# regenerate llmc/unicode_tables.h from Debian's unicode-data (/usr/share/unicode); checked in, so rarely needed
.PHONY: unicode_tables clean_tokenizer
unicode_tables:
	$(PYTHON) dev/data/gen_unicode_tables.py > llmc/unicode_tables.h.tmp && mv llmc/unicode_tables.h.tmp llmc/unicode_tables.h

clean: clean_tokenizer
clean_tokenizer:
	rm -f bench_tokenizer

# ---------------------------------------------------------------------------------------------------
# CPU trainer and its test
# train_gpt2 is built with MPI (mpicxx -DUSE_MPI) when mpicxx exists, so `mpirun -np N ./train_gpt2` works;
# `make NO_MPI=1` (or a machine without MPI) builds the single-process trainer with plain $(CXX).
ifeq ($(NO_MPI),)
TRAIN_CXX := $(if $(shell command -v mpicxx 2>/dev/null),mpicxx -DUSE_MPI,$(CXX))
else
TRAIN_CXX := $(CXX)
endif

train_gpt2: train_gpt2.cpp $(HEADERS)
	$(TRAIN_CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

test_gpt2: test_gpt2.cpp train_gpt2.cpp $(HEADERS) $(TEST_GPT2_HEADERS)
	$(CXX) $(CXXFLAGS) $< -o $@ $(LDLIBS)

# ---------------------------------------------------------------------------------------------------
# data parallel: MPI on the CPU, NCCL on the GPU
MPICXX ?= mpicxx
HAVE_MPICXX := $(shell command -v $(MPICXX) 2>/dev/null)

# NCCL layer (llmc/nccl_gpu.cuh), compiles anywhere (warning-free), runs on GPUs:
#   dev/cuda/nccl_check        one GPU, or one process per GPU with -pi tcp|fs -pn N -pr R -ps HOST / -pf DIR
#   dev/cuda/nccl_check_mpi    built with -DUSE_MPI (where mpicxx exists): mpirun -np N dev/cuda/nccl_check_mpi
# A program using nccl_gpu.cuh links $(NCCL_LIB) (nothing with NO_MULTI_GPU=1), and with MPI also
# $(MPI_NVCC_INC) / $(MPI_NVCC_LIBS).
MPI_NVCC_INC = $(addprefix -I,$(shell $(MPICXX) --showme:incdirs 2>/dev/null))
MPI_NVCC_LIBS = $(addprefix -L,$(shell $(MPICXX) --showme:libdirs 2>/dev/null)) \
	$(addprefix -l,$(shell $(MPICXX) --showme:libs 2>/dev/null))
NCCL_DEFS = $(if $(NO_MULTI_GPU),-DNO_MULTI_GPU,)
NCCL_LIB = $(if $(NO_MULTI_GPU),,-lnccl)
# the GPU trainer under mpirun: where mpicxx exists, unless NO_MPI or NO_MULTI_GPU
GPU_MPI = $(if $(NO_MPI)$(NO_MULTI_GPU),,$(HAVE_MPICXX))
GPU_MPI_FLAGS = $(if $(GPU_MPI),-DUSE_MPI $(MPI_NVCC_INC),)
GPU_MPI_LIBS = $(if $(GPU_MPI),$(MPI_NVCC_LIBS),)

# ---------------------------------------------------------------------------------------------------
# CUDA: every program is built by one nvcc command line, NVCC_BUILD, into $(CUDA_BUILD)
#   -fopenmp: llmc/adamw8bit.h and the checks' CPU references have OpenMP loops
NVCCFLAGS = -std=c++17 -O3 -I. $(CUDA_ARCHS) -Xcompiler -Wall,-Wextra,-fopenmp --expt-relaxed-constexpr \
	$(NCCL_DEFS)
NVCC_LDLIBS = -lgomp -lcublasLt $(NCCL_LIB)
NVCC_BUILD = mkdir -p $(@D) && $(NVCC) $(NVCCFLAGS) $(PRECISION_FLAG) $(EXTRA_NVCCFLAGS) $< -o $@ \
	$(NVCC_LDLIBS) $(EXTRA_LDLIBS)
# PRECISION=FP32 makes the plain names fp32 builds; the _fp32 / fp32cu names always are
PRECISION ?= BF16
PRECISION_FLAG = $(if $(filter FP32,$(PRECISION)),-DENABLE_FP32,)
$(CUDA_OUT)dev/cuda/%_fp32 $(CUDA_OUT)%fp32cu: PRECISION_FLAG = -DENABLE_FP32
CUDA_HEADERS := $(wildcard llmc/*.cuh)
CUDA_DEPS := $(HEADERS) $(CUDA_HEADERS)

# kernel checks: dev/cuda/<name>_check compares a kernel with a CPU reference on a GPU and times it (BF16
# build, plus an _fp32 variant built with -DENABLE_FP32 where the kernel has both); on the CPU: make emu.
#   encoder, layernorm, gelu, matmul (cuBLASLt), classifier, adamw (with the global norm), attention (flash
#   forward/backward); quantize (blockwise absmax, NF4) and adamw8bit, one build: their codes are floats
LAYER_CHECKS := encoder_check layernorm_check gelu_check matmul_check classifier_check adamw_check \
	attention_check
CHECKS := $(LAYER_CHECKS) $(addsuffix _fp32,$(LAYER_CHECKS)) quantize_check adamw8bit_check
CHECK_BINS := $(addprefix $(CUDA_OUT)dev/cuda/,$(CHECKS))
$(CUDA_OUT)dev/cuda/%_check: dev/cuda/%_check.cu $(CHECK_HEADERS) $(CUDA_DEPS)
	$(NVCC_BUILD)
$(CUDA_OUT)dev/cuda/%_check_fp32: dev/cuda/%_check.cu $(CHECK_HEADERS) $(CUDA_DEPS)
	$(NVCC_BUILD)
CUDA_BINS += $(CHECK_BINS)

ifeq ($(NO_MULTI_GPU),)
$(CUDA_OUT)dev/cuda/nccl_check: dev/cuda/nccl_check.cu $(CUDA_DEPS)
	$(NVCC_BUILD)
$(CUDA_OUT)dev/cuda/nccl_check_mpi: EXTRA_NVCCFLAGS = -DUSE_MPI $(MPI_NVCC_INC)
$(CUDA_OUT)dev/cuda/nccl_check_mpi: EXTRA_LDLIBS = $(MPI_NVCC_LIBS)
$(CUDA_OUT)dev/cuda/nccl_check_mpi: dev/cuda/nccl_check.cu $(CUDA_DEPS)
	$(NVCC_BUILD)
CUDA_BINS += $(CUDA_OUT)dev/cuda/nccl_check
ifneq ($(HAVE_MPICXX),)
ifeq ($(NO_MPI),)
CUDA_BINS += $(CUDA_OUT)dev/cuda/nccl_check_mpi
endif
endif
endif

# GPU trainer
#   train_gpt2cu / test_gpt2cu          the build PRECISION selects (BF16 by default, `PRECISION=FP32`)
#   train_gpt2fp32cu / test_gpt2fp32cu  always FP32, so one `make cuda` builds both precisions
# The trainer is built with -DUSE_MPI where mpicxx exists (mpirun -np N ./train_gpt2cu); without it (or with
# NO_MPI=1), several GPUs still work through -pi tcp|fs; with NO_MULTI_GPU=1 it is one GPU, nothing else.
# The test runs one process and needs no MPI.
# GPU tests (need a GPU, not part of `make test`): dev/cuda/bringup.sh
GPU_TRAINERS := $(addprefix $(CUDA_OUT),train_gpt2cu train_gpt2fp32cu)
GPU_TESTS := $(addprefix $(CUDA_OUT),test_gpt2cu test_gpt2fp32cu)
$(GPU_TRAINERS): EXTRA_NVCCFLAGS = $(GPU_MPI_FLAGS)
$(GPU_TRAINERS): EXTRA_LDLIBS = $(GPU_MPI_LIBS)
$(GPU_TRAINERS): train_gpt2.cu $(CUDA_DEPS)
	$(NVCC_BUILD)
$(GPU_TESTS): test_gpt2.cu train_gpt2.cu $(CUDA_DEPS) $(TEST_GPT2_HEADERS)
	$(NVCC_BUILD)
CUDA_BINS += $(GPU_TRAINERS) $(GPU_TESTS)

# ---------------------------------------------------------------------------------------------------
# GPU bring-up (dev/cuda/bringup.sh, README "Bring-up on a GPU"): `make bringup_pack` builds here, with this
# machine's CUDA toolkit, every program the bring-up runs, for one GPU (NO_MULTI_GPU=1: no NCCL, no MPI) and
# Hopper (CUDA_ARCH=90a), into build/bringup/ in the repository's layout, with what they read:
#   train_gpt2cu train_gpt2fp32cu test_gpt2cu test_gpt2fp32cu dev/cuda/<every check>
#   train_gpt2              the CPU trainer (no MPI, x86-64-v2: whatever the GPU machine's processor)
#   test/gpu/*tiny*.bin     the small reference states, LoRA's too (the gpt2v ones, 27 MB of model and 79 MB of state
#                           each, are made on the GPU machine by train_gpt2.py from test/gpu/<name>.args)
#   data/                   the Tiny Shakespeare shards and gpt2_tokenizer.bin
#   MANIFEST                the toolkit, the commit, each program's size and the libraries it needs (readelf)
# The pack must stay under 60 MiB: the device tool carries 64 MiB, the working tree included.
PACK := build/bringup
PACK_LIMIT_MIB := 60
PACK_STATES := $(foreach n,tiny tiny_bf16 lora_tiny lora_tiny_bf16 lora_tiny_nf4 lora_tiny_nf4_bf16,\
	$(PACK)/test/gpu/$(n)_model.bin $(PACK)/test/gpu/$(n)_state.bin)
PACK_ARGS := $(PACK)/test/gpu/gpt2v.args $(PACK)/test/gpu/gpt2v_bf16.args
.PHONY: bringup_pack
bringup_pack: $(PACK_STATES) $(PACK_ARGS) $(PACK)/train_gpt2 $(addprefix $(PACK)/,$(TINYSHAKESPEARE_DATA))
	$(MAKE) --no-print-directory CUDA_BUILD=$(PACK) NO_MULTI_GPU=1 CUDA_ARCH=90a cuda
	bash dev/cuda/bringup_manifest.sh $(PACK) $(PACK_LIMIT_MIB) > $(PACK)/MANIFEST
	@cat $(PACK)/MANIFEST
$(PACK)/train_gpt2: train_gpt2.cpp $(HEADERS)
	@mkdir -p $(@D)
	$(CXX) -O3 -march=x86-64-v2 $(CXX_COMMON) $< -o $@ $(LDLIBS)
$(PACK)/test/gpu/%.bin: build/test/gpu/%.bin
	@mkdir -p $(@D)
	cp $< $@
$(PACK)/test/gpu/%.args: Makefile
	@mkdir -p $(@D)
	echo "$(REF_gpu/$*) --write-model build/test/gpu/$*_model.bin --write-state build/test/gpu/$*_state.bin" > $@
$(PACK)/data/%: data/%
	@mkdir -p $(@D)
	cp $< $@

# ---------------------------------------------------------------------------------------------------
# CPU emulator of CUDA (dev/cuda/emu): the same .cu/.cuh sources compiled by clang++ against emulated
# CUDA, cuBLASLt, NCCL and wmma headers, so every kernel runs on the CPU under checked CUDA rules.
# `make emu` builds build/emu/<program> for the GPU trainer, its test and every dev/cuda check; they
# take the same flags as the GPU programs. clang++ because it keeps template statics (__shared__) in
# the section the emulator poisons before every block (g++ does not; the emulator checks at start-up).
EMU_CXX ?= clang++
EMU_INCLUDE := dev/cuda/emu/include
EMU_HEADERS := $(wildcard $(EMU_INCLUDE)/*.h) $(HEADERS) $(CUDA_HEADERS)
EMU_FLAGS := -std=c++17 -O2 -g -fopenmp -Wall -Wextra -I$(EMU_INCLUDE) -I. -x c++
EMU_LIBS := -fopenmp -lm -lrt -pthread
EMU_MPI = $(if $(HAVE_MPICXX),-DUSE_MPI $(MPI_NVCC_INC),)
EMU_MPI_LIBS = $(if $(HAVE_MPICXX),$(MPI_NVCC_LIBS),)
EMU_CHECKS := encoder_check layernorm_check gelu_check matmul_check classifier_check adamw_check attention_check
EMU_BINS := build/emu/train_gpt2cu build/emu/train_gpt2fp32cu build/emu/test_gpt2cu build/emu/test_gpt2fp32cu \
	$(addprefix build/emu/,$(EMU_CHECKS) $(addsuffix _fp32,$(EMU_CHECKS))) \
	build/emu/quantize_check build/emu/adamw8bit_check build/emu/nccl_check \
	build/emu/single/train_gpt2cu build/emu/single/train_gpt2fp32cu
.PHONY: emu
emu: $(EMU_BINS)
build/emu/train_gpt2cu: train_gpt2.cu $(EMU_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_MPI) $< -o $@ $(EMU_LIBS) $(EMU_MPI_LIBS)
build/emu/train_gpt2fp32cu: train_gpt2.cu $(EMU_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $(EMU_MPI) $< -o $@ $(EMU_LIBS) $(EMU_MPI_LIBS)
# the trainers for one GPU (NO_MULTI_GPU=1: llmc/nccl_none.h, no MPI), as the bring-up pack has them
build/emu/single/train_gpt2cu: train_gpt2.cu $(EMU_HEADERS)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) -DNO_MULTI_GPU $< -o $@ $(EMU_LIBS)
build/emu/single/train_gpt2fp32cu: train_gpt2.cu $(EMU_HEADERS)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_FLAGS) -DNO_MULTI_GPU -DENABLE_FP32 $< -o $@ $(EMU_LIBS)
# a copy of train_gpt2.cu with a planted bug (tests/gpu/test_emu_pipeline.sh), built as the FP32 one is
build/emu/pipeline_mutants/%/train_gpt2fp32cu: build/emu/pipeline_mutants/%/train_gpt2.cu $(EMU_HEADERS)
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $(EMU_MPI) $< -o $@ $(EMU_LIBS) $(EMU_MPI_LIBS)
build/emu/test_gpt2cu: test_gpt2.cu train_gpt2.cu $(EMU_HEADERS) $(TEST_GPT2_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) $< -o $@ $(EMU_LIBS)
build/emu/test_gpt2fp32cu: test_gpt2.cu train_gpt2.cu $(EMU_HEADERS) $(TEST_GPT2_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $< -o $@ $(EMU_LIBS)
build/emu/%_check: dev/cuda/%_check.cu $(EMU_HEADERS) $(CHECK_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) $< -o $@ $(EMU_LIBS)
build/emu/%_check_fp32: dev/cuda/%_check.cu $(EMU_HEADERS) $(CHECK_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $< -o $@ $(EMU_LIBS)
build/emu/nccl_check: dev/cuda/nccl_check.cu $(EMU_HEADERS)
	@mkdir -p build/emu
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_MPI) $< -o $@ $(EMU_LIBS) $(EMU_MPI_LIBS)

# `make cuda` builds every CUDA target of every section; the recipe is expanded when it runs, so it
# sees CUDA_BINS additions made anywhere in this file.
cuda:
	$(MAKE) --no-print-directory $(CUDA_BINS)

# ---------------------------------------------------------------------------------------------------
# PyTorch reference states: a model file and train_gpt2.py's debug state for it (float64: the batch, logits,
# loss, every gradient, 10 AdamW steps' losses), build/test/<name>_model.bin and <name>_state.bin, remade
# when train_gpt2.py changes. test_gpt2 and test_gpt2cu read them (tests/common/lib.sh says which is which);
# dev/cuda/bringup.sh runs on the gpu/ ones. The _bf16 ones hold the fp32 model's weights rounded to
# bf16, in a bf16 (version 5) checkpoint. Heads of size 64 or 128 for the GPU (its flash attention).
REF_tiny := --test-init --vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 \
	-B 4 -T 16
REF_tiny_bf16 := $(REF_tiny) --round-to-bf16 --model-dtype bf16
REF_gpt2v := --test-init --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 64 \
	--tokens data/tinyshakespeare/tiny_shakespeare_val.bin
REF_gpu/tiny := --vocab-size 64 --padded-vocab 128 --n-layer 2 --n-head 2 --n-embd 128 --block-size 64 -B 4 -T 32
REF_gpu/tiny_bf16 := $(REF_gpu/tiny) --round-to-bf16 --model-dtype bf16
REF_gpu/gpt2v := --n-layer 2 --n-head 1 --n-embd 128 --block-size 64 -B 4 -T 64 \
	--tokens data/tinyshakespeare/tiny_shakespeare_val.bin
REF_gpu/gpt2v_bf16 := $(REF_gpu/gpt2v) --round-to-bf16 --model-dtype bf16
# LoRA debug states (--write-lora-state; the model file is the frozen base), test_gpt2 reads them too: every
# target on an fp32 base; the default targets on an NF4 base (QLoRA); every target, rank 8, on a GPT-2-vocabulary
# NF4 base
# (adapters random, B included: --lora-test-init). The GPU's (gpu/lora_*): rank 8 (its matmuls need multiples
# of 8), head size 64.
REF_lora_tiny := $(REF_tiny) --lora-rank 4 --lora-alpha 8 --lora-targets all --lora-test-init
REF_lora_tiny_nf4 := $(REF_tiny) --lora-rank 4 --lora-alpha 8 --lora-nf4 --lora-test-init
REF_lora_gpt2v_nf4 := $(REF_gpt2v) --lora-rank 8 --lora-alpha 16 --lora-targets all --lora-nf4 --lora-test-init
REF_gpu/lora_tiny := $(REF_gpu/tiny) --lora-rank 8 --lora-alpha 16 --lora-targets all --lora-test-init
REF_gpu/lora_tiny_bf16 := $(REF_gpu/lora_tiny) --round-to-bf16 --model-dtype bf16
REF_gpu/lora_tiny_nf4 := $(REF_gpu/tiny) --lora-rank 8 --lora-alpha 16 --lora-nf4 --lora-test-init
REF_gpu/lora_tiny_nf4_bf16 := $(REF_gpu/lora_tiny_nf4) --round-to-bf16 --model-dtype bf16
CPU_REFERENCE_STATES := $(foreach n,tiny tiny_bf16 gpt2v lora_tiny lora_tiny_nf4 lora_gpt2v_nf4,build/test/$(n)_state.bin)
REFERENCE_STATES := $(CPU_REFERENCE_STATES) build/test/gpu/tiny_state.bin build/test/gpu/tiny_bf16_state.bin \
	$(foreach n,lora_tiny lora_tiny_bf16 lora_tiny_nf4 lora_tiny_nf4_bf16,build/test/gpu/$(n)_state.bin)
GPU_REFERENCE_STATES := $(foreach n,tiny tiny_bf16 gpt2v gpt2v_bf16,build/test/gpu/$(n)_state.bin)
.PHONY: reference_states gpu_reference_states
reference_states: $(REFERENCE_STATES)
gpu_reference_states: $(GPU_REFERENCE_STATES)
# (a pattern rule's two targets are made by one run of its recipe)
build/test/%_model.bin build/test/%_state.bin: train_gpt2.py
	@mkdir -p $(@D)
	$(PYTHON) train_gpt2.py $(REF_$*) --write-model build/test/$*_model.bin --write-state build/test/$*_state.bin \
		> /dev/null
build/test/lora_%_model.bin build/test/lora_%_state.bin: train_gpt2.py
	@mkdir -p $(@D)
	$(PYTHON) train_gpt2.py $(REF_lora_$*) --write-model build/test/lora_$*_model.bin \
		--write-lora-state build/test/lora_$*_state.bin > /dev/null
build/test/gpu/lora_%_model.bin build/test/gpu/lora_%_state.bin: train_gpt2.py
	@mkdir -p $(@D)
	$(PYTHON) train_gpt2.py $(REF_gpu/lora_$*) --write-model build/test/gpu/lora_$*_model.bin \
		--write-lora-state build/test/gpu/lora_$*_state.bin > /dev/null
build/test/gpt2v_state.bin build/test/gpu/gpt2v_state.bin build/test/gpu/gpt2v_bf16_state.bin \
	build/test/lora_gpt2v_nf4_state.bin: data/tinyshakespeare/tiny_shakespeare_val.bin

# ---------------------------------------------------------------------------------------------------
# tests (tests/run.sh finds and runs them; its header says how)
#   tests/<concern>/test_<name>.cpp or .cu   a test program: build/tests/test_<name>, by the one pattern
#                                            rule below; tests/run.sh runs it as it is
#   tests/<concern>/<name>.cpp               a helper program a test script drives: build/tests/<name>
#   tests/<concern>/test_<name>.sh           a test script
# A program is compiled like the CPU trainer; the emulator's own tests (test_emu_*) like `make emu`'s
# programs. -MMD writes each program's header dependencies to build/deps/tests/.
TEST_SRCS := $(wildcard tests/*/test_*.cpp tests/*/test_*.cu) tests/data/tokenizer_driver.cpp \
	tests/dist/rendezvous_peer.cpp
TEST_PROGS := $(addprefix build/tests/,$(basename $(notdir $(TEST_SRCS))))
ifneq ($(HAVE_MPICXX),)
TEST_PROGS += build/tests/test_mpi_collectives_mpi
endif
TEST_CXX = $(CXX)
TEST_FLAGS = $(CXXFLAGS)
TEST_LIBS = $(LDLIBS)
build/tests/test_emu_%: TEST_CXX = $(EMU_CXX)
build/tests/test_emu_%: TEST_FLAGS = $(EMU_FLAGS)
build/tests/test_emu_%: TEST_LIBS = $(EMU_LIBS)

# build/tests/<name> from its source tests/*/<name>.cpp or .cu (found in the second expansion)
.SECONDEXPANSION:
build/tests/%: $$(or $$(wildcard tests/*/$$*.cpp tests/*/$$*.cu),tests/NO_SOURCE_FOR_$$*)
	@mkdir -p build/tests build/deps/tests
	$(TEST_CXX) $(TEST_FLAGS) -MMD -MP -MF build/deps/tests/$*.d $< -x none $(filter %.o,$^) -o $@ $(TEST_LIBS)
-include $(wildcard build/deps/tests/*.d)

# llmc/mpi_cpu.h with MPI, run under mpirun by tests/dist/test_mpi_collectives.sh (the pattern rule's
# build/tests/test_mpi_collectives is the single-process fallback)
build/tests/test_mpi_collectives_mpi: tests/dist/test_mpi_collectives.cpp
	@mkdir -p build/tests build/deps/tests
	$(MPICXX) $(CXXFLAGS) -DUSE_MPI -MMD -MP -MF build/deps/tests/$(@F).d $< -o $@ $(LDLIBS)

# the CUDA toolkit's own host bf16 conversions, the reference of test_emu_bf16 (its header and the
# emulator's cannot be in one file)
build/tests/test_emu_bf16: build/tests/emu_bf16_nvidia.o
build/tests/emu_bf16_nvidia.o: tests/emu/emu_bf16_nvidia.cpp
	@mkdir -p build/tests
	$(CXX) -O2 -c -I/usr/local/cuda/include $< -o $@

# Everything is built first, two compiles at a time (or with the -j make was given), then the runner runs
# the tests two at a time. A build that fails (no CUDA toolkit for test_emu_bf16's reference, say) does not
# stop the others (-k) nor the run: the tests that need it fail, and the others still run. The runner gets
# an empty MAKEFLAGS: the tests' own makes (no-ops once everything is built, but test_cuda_build's rebuild)
# are makes of their own, not jobs of this one, so they neither share nor warn about its jobserver.
# (Variables for them go in the environment, not on this command line.)
TEST_BUILD_JOBS = $(if $(findstring -j,$(MAKEFLAGS)),,-j2)
test:
	-$(MAKE) --no-print-directory -k $(TEST_BUILD_JOBS) all $(TEST_PROGS) emu data reference_states \
		gpu_reference_states
	MAKEFLAGS= bash tests/run.sh -j 2

# the inner loop: the unit tests and the CPU trainer against the PyTorch reference
UNIT_TESTS := $(patsubst %.cpp,build/tests/%,$(notdir $(wildcard tests/unit/test_*.cpp)))
test-fast:
	-$(MAKE) --no-print-directory -k $(TEST_BUILD_JOBS) test_gpt2 $(UNIT_TESTS) $(CPU_REFERENCE_STATES)
	MAKEFLAGS= bash tests/run.sh -j 2 tests/unit test_gpt2

# clang-format 14, as tests/style/test_format.sh checks
CLANG_FORMAT ?= $(or $(shell command -v clang-format-14 2>/dev/null),clang-format)
format:
	$(CLANG_FORMAT) -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -f train_gpt2 test_gpt2 tokenizer prepro_tinyshakespeare prepro_fortunes $(CUDA_BINS)
	rm -rf build
