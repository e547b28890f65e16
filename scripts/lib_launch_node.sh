# Sourced by run_tcp_rendezvous.sh and run_fs_rendezvous.sh: start one trainer process per GPU of this
# machine and wait for them; the first one to fail stops the others and sets the exit status.
#   launch_node <bootstrap flags...> -- <trainer flags...>
# Reads NODE_RANK, NUM_NODES, GPUS_PER_NODE, ZERO_STAGE, TRAINER (see the calling script's header).
TRAINER=${TRAINER:-./train_gpt2cu}
ZERO_STAGE=${ZERO_STAGE:-1}
NUM_NODES=${NUM_NODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

launch_node() {
    local bootstrap=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do bootstrap+=("$1"); shift; done
    [ $# -gt 0 ] && shift # the --
    [ -n "${NODE_RANK:-}" ] || { echo "error: set NODE_RANK (this machine's index, 0..NUM_NODES-1)" >&2; exit 1; }
    if [ "$NODE_RANK" -lt 0 ] || [ "$NODE_RANK" -ge "$NUM_NODES" ]; then
        echo "error: NODE_RANK=$NODE_RANK is not in 0..$((NUM_NODES - 1))" >&2
        exit 1
    fi
    [ -x "$TRAINER" ] || { echo "error: trainer '$TRAINER' not found or not executable (make it first)" >&2; exit 1; }
    local num_processes=$((NUM_NODES * GPUS_PER_NODE))
    pids=()
    stop_all() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
    trap 'stop_all; exit 130' INT TERM
    local g rank
    for ((g = 0; g < GPUS_PER_NODE; g++)); do
        rank=$((NODE_RANK * GPUS_PER_NODE + g))
        echo "starting process $rank of $num_processes: $TRAINER ${bootstrap[*]} -pn $num_processes -pr $rank -pg $GPUS_PER_NODE -z $ZERO_STAGE $*"
        "$TRAINER" "${bootstrap[@]}" -pn "$num_processes" -pr "$rank" -pg "$GPUS_PER_NODE" -z "$ZERO_STAGE" "$@" &
        pids+=($!)
    done
    # wait for every process (bash >= 5.1 for wait -n -p); the first failure stops the rest
    local status=0 rc finished pid
    local remaining=("${pids[@]}") still
    while [ ${#remaining[@]} -gt 0 ]; do
        rc=0
        finished=""
        wait -n -p finished "${remaining[@]}" || rc=$?
        [ -n "$finished" ] || break # nothing left to wait for
        if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
            status=$rc
            echo "error: a trainer process on this machine exited with status $rc; stopping the others" >&2
            stop_all
        fi
        still=()
        for pid in "${remaining[@]}"; do
            if [ "$pid" != "$finished" ]; then still+=("$pid"); fi
        done
        remaining=("${still[@]}")
    done
    exit "$status"
}
