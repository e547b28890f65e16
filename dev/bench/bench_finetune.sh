#!/usr/bin/env bash
# Fine-tuning on the CPU: full fine-tuning against LoRA and QLoRA. A small GPT-2 (d4: L=4, C=256, GPT-2
# vocabulary) is pretrained on Tiny Shakespeare, then fine-tuned on the second corpus (Debian's fortunes,
# `make data_fortunes`) three ways from the same checkpoint, with the same data, steps and schedule:
#   (a) full: every parameter trains                     (-l 1e-3)
#   (b) LoRA: rank 8, alpha 16 on every block matrix     (-lo 8 -la 16 -lt all -l 5e-3)
#   (c) QLoRA: the same with the frozen base's block matrices in NF4 (-lq 1)
# Each learning rate is the best of a small sweep (dev/results/finetune_cpu.txt lists it): full 3e-4 and
# 1e-3; LoRA 2e-3, 5e-3, 1e-2, 2e-2, and rank 16 at 1e-2. Prints for each: the val loss on fortunes before and after, the trainable parameters, the
# bytes of weights + gradients + optimizer state (the memory table's allocated figures), the median step
# time and the peak resident memory; writes the three logs and a PNG of the curves.
#   bash dev/bench/bench_finetune.sh [pretrain steps] [fine-tune steps] [out dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
pre_steps=${1:-500}
ft_steps=${2:-200}
out=${3:-dev/results}
make -s data data_fortunes train_gpt2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores," \
    "OMP_NUM_THREADS=$OMP_NUM_THREADS; commit $(git rev-parse --short HEAD)"

pre="-e d4 -b 8 -t 64 -x $pre_steps -v 100 -m 20 -s 0 -l 1e-3 -u 20 -c 0.1 -sd 1337"
echo "pretrain on Tiny Shakespeare: ./train_gpt2 $pre"
./train_gpt2 $pre -o "$work/pre" > "$work/pre.txt"
base=$work/pre/model_$(printf %08d "$pre_steps").bin
echo "  final val loss (Tiny Shakespeare) $(grep 'final val loss' "$work/pre.txt" | awk '{print $4}')"

ft="-e <pretrained> -i data/fortunes/fortunes_train.bin -j data/fortunes/fortunes_val.bin -b 8 -t 64 -x $ft_steps -v 25 -m 20 -s 0 -u 10 -c 0.1 -sd 1337"
echo "fine-tune on fortunes: ./train_gpt2 $ft, and"
runs=("full:-l 1e-3" "lora:-lo 8 -la 16 -lt all -l 5e-3" "qlora:-lo 8 -la 16 -lt all -lq 1 -l 5e-3")
for run in "${runs[@]}"; do echo "  ${run%%:*}: ${run#*:}"; done
printf "\n%-6s %10s %10s %12s %16s %12s %10s\n" run "val before" "val after" "trainable" "weights+grads+optim" "step (median)" "peak RSS"
for run in "${runs[@]}"; do
    name=${run%%:*} flags=${run#*:}
    ./train_gpt2 ${ft/<pretrained>/$base} $flags -o "$work/$name" > "$work/$name.txt"
    f=$work/$name.txt
    before=$(grep -m1 "^val loss" "$f" | awk '{print $3}')
    after=$(grep "final val loss" "$f" | awk '{print $4}')
    trainable=$(grep -m1 "adapter parameters train" "$f" | sed 's/.*: \([0-9]*\) adapter parameters.*/\1/' || true)
    [ -n "$trainable" ] || trainable=$(grep -m1 "^model:" "$f" | sed 's/.*, \([0-9]*\) parameters/\1/')
    # allocated MiB of the base, trained, gradients and optimizer rows of the memory table
    state=$(awk '/^memory \(this process[,)]/ { on = 1; next } on && /^  (frozen|trained|gradients|optimizer)/ { s += $NF }
                 on && /^  total/ { on = 0 } END { printf "%.1f", s }' "$f")
    ms=$(grep "^step" "$f" | tail -n +2 | sed 's/.* | \([0-9.]*\) ms .*/\1/' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    rss=$(grep "peak resident memory" "$f" | sed 's/.*: \([0-9.]*\) MiB.*/\1/')
    printf "%-6s %10s %10s %12s %14s MiB %9s ms %6s MiB\n" "$name" "$before" "$after" "$trainable" "$state" "$ms" "$rss"
    mkdir -p "$out"
    cp "$work/$name/main.log" "$out/finetune_$name.log"
done
echo
for run in "${runs[@]}"; do
    name=${run%%:*}
    echo "memory table, $name:"
    awk '/^memory \(this process[,)]/ { on = 1 } on { print "  " $0 } on && /^  total/ { exit }' "$work/$name.txt"
done
# the same tables for GPT-2 small's shape (d12, random weights: one step at B=1 T=64 fills them), where the
# block matrices NF4 compresses are 68% of the parameters (d4's are 19%: its 50304 x 256 embedding dominates)
for run in "full:" "lora:-lo 8 -la 16 -lt all" "qlora:-lo 8 -la 16 -lt all -lq 1"; do
    name=${run%%:*} flags=${run#*:}
    ./train_gpt2 -e d12 -b 1 -t 64 -x 1 -v 100 -m 1 -s 0 $flags > "$work/d12-$name.txt"
    echo "memory table at d12 (B=1 T=64), $name:"
    awk '/^memory \(this process[,)]/ { on = 1 } on { print "  " $0 } on && /^  total/ { exit }' "$work/d12-$name.txt"
done
/usr/bin/python3 dev/plot_log.py "$out/finetune_full.log" "$out/finetune_lora.log" "$out/finetune_qlora.log" \
    --labels "full fine-tuning,LoRA r=8,QLoRA r=8 (NF4 base)" \
    --title "d4 pretrained on Tiny Shakespeare, fine-tuned on fortunes" -o "$out/finetune_cpu.png"
