#!/usr/bin/env bash
# Bad input to both trainers (the CPU trainer and the GPU trainer's host code, on the CUDA emulator's
# single-GPU FP32 build): flags out of range, corrupted, poisoned or impossible model and state files,
# special files, a resume that changes the run, and runs too big for the memory. Every case runs under a
# timeout and must end with exit status 1 (not a signal, not the timeout: no crash, no hang) and an error
# that names the flag or file and what was expected; the accepted cases must exit 0 with the note or warning
# they owe. The bad files are made by tests/faults/bad_files.py from a good checkpoint of each trainer, with
# checksums recomputed by zlib (independently of the trainers) where a case must get past the checksum.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/common/lib.sh
make -s --no-print-directory train_gpt2 build/emu/single/train_gpt2fp32cu data
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=2
failures=0
quick="-b 4 -t 64 -v 100 -m 1 -s 0"

# expect_error WHAT PATTERN BINARY ARGS...: refused with an error matching PATTERN; expect_ok: accepted, with
# output matching PATTERN (lib.sh's expect_status); WHAT is prefixed with the binary's name
expect_error() { expect_status 1 "$(basename "$3"): $1" "$2" "${@:3}"; }
expect_ok() { expect_status 0 "$(basename "$3"): $1" "$2" "${@:3}"; }

mkfifo "$dir/fifo"
# the training shard with one token changed (at position 100): the same size, another corpus
cp data/tinyshakespeare/tiny_shakespeare_train.bin "$dir/train_changed.bin"
printf '\x07\x00' | dd of="$dir/train_changed.bin" bs=1 seek=$((1024 + 2 * 100)) conv=notrunc status=none
for bin in ./train_gpt2 build/emu/single/train_gpt2fp32cu; do
    b=$(basename "$bin")
    good="$dir/$b-good"
    timeout 300 "$bin" -e d2 $quick -x 2 -n 2 -o "$good" > "$dir/$b-good.txt"
    mkdir -p "$dir/$b-bad"
    $PY tests/faults/bad_files.py "$good" 2 "$dir/$b-bad"
    bad="$dir/$b-bad"

    # flags: non-finite, out of range, or a value that would be silently changed
    expect_error "NaN learning rate" "flag -l expects a finite number, got 'nan'" $bin -e d2 -l nan
    expect_error "inf weight decay" "flag -c expects a finite number" $bin -e d2 -c inf
    expect_error "learning rate out of range" "flag -l expects a number in \[0, 10\], got 20" $bin -e d2 -l 20
    expect_error "negative weight decay" "flag -c expects a number in \[0, 10\]" $bin -e d2 -c -0.1
    expect_error "negative clipping" "flag -gc expects a number in \[0, 1e\+09\]" $bin -e d2 -gc -1
    expect_error "temperature 0" "flag -st expects a number in \(0, 100\], got 0" $bin -e d2 -st 0
    expect_error "final lr fraction above 1" "flag -q expects a number in \[0, 1\]" $bin -e d2 -q 1.5
    expect_error "NaN cooldown" "flag -cf expects a finite number" $bin -e d2 -cf nan
    expect_error "-d -5 (not -1)" "flag -d expects -1 \(no accumulation\) or an integer in \[1, " $bin -e d2 -d -5
    expect_error "-d 0" "flag -d expects -1" $bin -e d2 -d 0
    expect_error "-m 0 (would log a val loss of 0)" "flag -m expects -1 \(all\) or an integer" $bin -e d2 -m 0
    expect_error "-x 0" "flag -x expects -1 \(one epoch\)" $bin -e d2 -x 0
    expect_error "negative seed" "flag -sd expects an integer in \[0, " $bin -e d2 -sd -3
    expect_error "batch-scaling reference 0" "flag -sb expects an integer in \[1, " $bin -e d2 -sr linear -sb 0
    expect_error "batch scaling beyond the lr range" "the peak learning rate 256 \(-l 1 scaled by -sr linear" \
        $bin -e d2 $quick -sr linear -sb 1 -l 1
    expect_error "-d whose accumulation count would wrap" "micro-batches of B\*T\*replicas = 256 tokens; the most supported is" \
        $bin -e d2 $quick -d $((256 * 4194304))
    expect_error "a micro-batch too large" "a micro-batch of 65536 x 1024 = 67108864 tokens is more than" \
        $bin -e d2 -b 65536 -t 1024
    expect_error "-y 1 with -ow 1" "flags -y 1 and -ow 1 contradict" $bin -e d2 -o "$dir/x" -y 1 -ow 1
    expect_ok "a sample longer than a sequence: cut, and said" "note: samples cut from -g 200 to 63 tokens" \
        $bin -e d2 $quick -x 1 -s 1 -g 200
    # pipeline parallelism: a schedule that does not exist, a layout that does not divide
    expect_error "an unknown pipeline schedule" "flag -pk: expected gpipe or 1f1b, got 'zb'" $bin -e d2 -pk zb
    expect_error "-pp with ZeRO-2" "flags -pp 2 and -z 2: a pipeline shards its data-parallel groups with ZeRO-1 at most" \
        $bin -e d2 -pp 2 -z 2
    expect_error "-pp with LoRA" "flags -pp 2 and -lo 4: LoRA does not run in a pipeline" $bin -e d2 -pp 2 -lo 4
    expect_error "-pp 2 in one process" "flag -pp 2: 1 processes are not a whole number of pipelines of 2 stages" \
        $bin -e d2 $quick -pp 2

    # model files
    expect_error "a flipped bit in a model" "model_flipped.bin' is corrupted: the CRC-32 of its parameters" \
        $bin -e "$bad/model_flipped.bin" $quick -x 1
    expect_error "a NaN weight (checksum valid)" "model_nan.bin' holds a non-finite parameter: wte\[7\] = nan" \
        $bin -e "$bad/model_nan.bin" $quick -x 1
    expect_error "an inf weight in an llm.c file (no checksum)" "holds a non-finite parameter: wte\[7\] = inf" \
        $bin -e "$bad/model_inf_llmc.bin" $quick -x 1
    expect_ok "an llm.c model file (no checksum) loads" "^step    1/1" $bin -e "$bad/model_llmc.bin" $quick -x 1
    expect_error "a header whose sizes wrap (C = 2^30 in 1 KB)" "model_huge_c.bin': model header out of range" \
        $bin -e "$bad/model_huge_c.bin"
    expect_error "an unknown header slot 8" "header slot 8 holds 12345" $bin -e "$bad/model_slot8.bin"
    expect_error "a FIFO as the model" "fifo' is not a regular file" $bin -e "$dir/fifo"
    expect_error "a directory as the model" "is a directory, expected a file" $bin -e "$dir"
    expect_error "a FIFO as the train data" "fifo' is not a regular file" $bin -e d2 -i "$dir/fifo"
    expect_error "a FIFO as the tokenizer" "fifo' is not a regular file" $bin -e d2 $quick -x 1 -tk "$dir/fifo"

    # state files: each replaces the good one in a copy of the checkpoint directory, then -y 1
    for c in "state_flipped:is corrupted: the CRC-32 of its contents" \
        "state_nan_m:holds an invalid AdamW m value: element 11 is nan" \
        "state_negative_v:holds an invalid AdamW v value: element 5 is -1 \(expected a finite number >= 0\)" \
        "state_version1:is a training state file of version 1; this program reads version 2" \
        "state_facts:the header declares 1073741824 run facts" \
        "state_truncated:is truncated"; do
        name=${c%%:*}
        rm -rf "$dir/resume" && cp -r "$good" "$dir/resume"
        cp "$bad/$name.bin" "$dir/resume/state_00000002_00000.bin"
        expect_error "$name" "state_00000002_00000.bin.*${c#*:}|${c#*:}.*state_00000002_00000.bin" \
            $bin -e d2 $quick -x 3 -n 2 -o "$dir/resume" -y 1
    done

    # a resume that changes the run: refused, or warned, by kind
    rm -rf "$dir/resume" && cp -r "$good" "$dir/resume"
    expect_error "resume with another seed" "the checkpoint's run had -sd '1337', this run has '7'" \
        $bin -e d2 $quick -x 3 -n 2 -o "$dir/resume" -y 1 -sd 7
    expect_error "resume with other training data" "had -i \(train data\) '[0-9a-f]{8}: 305260 tokens in 1 shards', this run has '[0-9a-f]{8}: 32768" \
        $bin -e d2 $quick -x 3 -n 2 -o "$dir/resume" -y 1 -i data/tinyshakespeare/tiny_shakespeare_val.bin
    expect_error "resume with other training data of the same size" "had -i \(train data\) '[0-9a-f]{8}: 305260 tokens in 1 shards', this run has '[0-9a-f]{8}: 305260" \
        $bin -e d2 $quick -x 3 -n 2 -o "$dir/resume" -y 1 -i "$dir/train_changed.bin"
    expect_error "resume with another micro-batch (same tokens per step)" "the checkpoint's run had -b '4', this run has '2'" \
        $bin -e d2 -b 2 -t 64 -d 256 -v 100 -m 1 -s 0 -x 3 -n 2 -o "$dir/resume" -y 1
    expect_error "resume with -x below the checkpoint" "checkpoint in .* is of step 2, beyond this run's 1 steps" \
        $bin -e d2 $quick -x 1 -o "$dir/resume" -y 1
    expect_ok "resume with another learning rate: warned" "warning: resuming with -l '0.002'; the checkpoint's run had '0.00(1|06)'" \
        $bin -e d2 $quick -x 3 -n 2 -o "$dir/resume" -y 1 -l 0.002
done

# too big for the memory: refused before allocating, with what to reduce
expect_error "CPU: activations beyond the machine's memory" "out of memory: this run needs about .* GiB of host memory .*reduce -b or -t" \
    ./train_gpt2 -e d48 -b 8 -t 1024
CUDA_EMU_MEMORY=2000000000 expect_error "GPU: beyond the device's memory" "out of memory: this run needs about .* GiB of GPU memory .*-r 3" \
    build/emu/single/train_gpt2fp32cu -e d12 -b 16 -t 1024

[ $failures -eq 0 ] || { echo "$failures case(s) failed"; exit 1; }
echo "all bad-input cases: a clear error and exit 1, or the promised note"
