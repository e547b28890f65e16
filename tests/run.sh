#!/usr/bin/env bash
# The test runner: finds the tests under tests/, builds the test programs, runs each test with a timeout and
# prints a PASS or FAIL line with its time, then "N passed, M failed"; exits 1 if a test failed.
#
#   bash tests/run.sh [-j N] [-t SECONDS] [-l] [SELECTION...]
#
#   SELECTION  a folder (tests/unit, or unit), a file (tests/unit/test_zero.cpp) or a glob on test names
#              (test_emu_*, '*tokenizer*'); several are or-ed. None: every test.
#   -j N       run N tests at a time (default 1). Each test's output goes to build/tests/logs/<name>.log
#              and its end is printed when it fails. The scripts make what they need themselves; two at a
#              time may make the same file at once, so build first (make test does) before -j on a fresh
#              tree.
#   -t SECONDS the timeout of each test (default 600); a test that runs out FAILs.
#   -l         list the selected tests and exit.
#
# A test is one of:
#   tests/<concern>/test_<name>.sh              a script, run with bash from the repository root;
#   tests/<concern>/test_<name>.cpp (or .cu)    a program, built by the Makefile's one pattern rule to
#                                               build/tests/test_<name> and run as it is, with no arguments,
#                                               unless a script of the same name sits next to it: then the
#                                               script runs it (with arguments, or under mpirun).
# Exit status 0 passes. Test names are unique across the folders (they name the binaries).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

jobs=1 timeout_s=600 list_only=0 selection=()
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -j) jobs=$2; shift 2 ;;
    -j*) jobs=${1#-j}; shift ;;
    -t) timeout_s=$2; shift 2 ;;
    -l) list_only=1; shift ;;
    -h | --help) usage ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) selection+=("$1"); shift ;;
    esac
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: -j expects a positive integer, got '$jobs'" >&2; exit 2; }

# discovery: every test, in path order, as "name kind path" (kind: script or program)
all=()
declare -A seen
while IFS= read -r path; do
    file=${path##*/}
    name=${file%.*}
    kind=program
    [ "${file##*.}" = sh ] && kind=script
    # a program with a script of the same name is run by that script
    if [ "$kind" = program ] && [ -f "${path%/*}/$name.sh" ]; then continue; fi
    if [ -n "${seen[$name]:-}" ]; then
        echo "run.sh: two tests named $name: ${seen[$name]} and $path" >&2
        exit 2
    fi
    seen[$name]=$path
    all+=("$name $kind $path")
done < <(find tests -mindepth 2 -type f \( -name 'test_*.sh' -o -name 'test_*.cpp' -o -name 'test_*.cu' \) | sort)

selected() { # name path
    [ ${#selection[@]} -eq 0 ] && return 0
    local s
    for s in "${selection[@]}"; do
        s=${s%/}
        case "$2" in "$s" | "$s"/* | tests/"$s"/*) return 0 ;; esac
        # shellcheck disable=SC2053 # a glob on purpose
        [[ "$1" == $s ]] && return 0
    done
    return 1
}
tests=()
for t in "${all[@]}"; do
    read -r name kind path <<<"$t"
    selected "$name" "$path" && tests+=("$t")
done
if [ ${#tests[@]} -eq 0 ]; then
    echo "run.sh: no test matches ${selection[*]}" >&2
    exit 2
fi
if [ $list_only -eq 1 ]; then
    printf '%s\n' "${tests[@]}" | awk '{ printf "%-28s %-7s %s\n", $1, $2, $3 }'
    exit 0
fi

# the selected test programs, built in one make (up to date: nothing to do)
programs=()
for t in "${tests[@]}"; do
    read -r name kind path <<<"$t"
    [ "$kind" = program ] && programs+=("build/tests/$name")
done
if [ ${#programs[@]} -gt 0 ]; then
    make --no-print-directory -s -j"$jobs" "${programs[@]}" || echo "run.sh: some test programs did not build"
fi

logs=build/tests/logs
mkdir -p "$logs"
now_ns() { date +%s%N; }

# runs one test in the background; its exit status and time land in $logs/<name>.result
start_test() { # name kind path
    local name=$1 kind=$2 path=$3
    rm -f "$logs/$name.result"
    (
        start=$(now_ns)
        if [ "$kind" = script ]; then
            timeout -k 10 "$timeout_s" bash "$path" >"$logs/$name.log" 2>&1 </dev/null
        elif [ -x "build/tests/$name" ]; then
            timeout -k 10 "$timeout_s" "build/tests/$name" >"$logs/$name.log" 2>&1 </dev/null
        else
            echo "build/tests/$name was not built (make build/tests/$name)" >"$logs/$name.log"
            false
        fi
        rc=$?
        [ $rc -eq 124 ] && echo "run.sh: timed out after $timeout_s s" >>"$logs/$name.log"
        echo "$rc $((($(now_ns) - start) / 100000000))" >"$logs/$name.result.tmp"
        mv "$logs/$name.result.tmp" "$logs/$name.result"
    ) &
}

passed=0 failed=0 failed_names=() running=()
report() { # name: prints the finished test's line (and the end of its log if it failed)
    local name=$1 rc tenths
    read -r rc tenths <"$logs/$name.result"
    local secs="$((tenths / 10)).$((tenths % 10)) s"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        printf "PASS %-28s %8s\n" "$name" "$secs"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        printf "FAIL %-28s %8s  (exit %s; last lines of %s:)\n" "$name" "$secs" "$rc" "$logs/$name.log"
        tail -n 40 "$logs/$name.log" | sed 's/^/   | /'
    fi
}
reap() { # waits until a running test has finished, reports every finished one
    local still=() name
    while :; do
        still=()
        for name in "${running[@]}"; do
            if [ -f "$logs/$name.result" ]; then report "$name"; else still+=("$name"); fi
        done
        if [ ${#still[@]} -lt ${#running[@]} ]; then break; fi
        wait -n 2>/dev/null || sleep 0.2
    done
    running=(${still[@]+"${still[@]}"})
}

# interrupted: stop the running tests (each timeout leads a process group of its own: the test's processes)
stop_all() {
    local job child
    for job in $(jobs -p); do
        for child in $(pgrep -P "$job"); do kill -TERM -- "-$child" 2>/dev/null; done
        kill "$job" 2>/dev/null
    done
    exit 130
}
trap stop_all INT TERM
total_start=$(now_ns)
for t in "${tests[@]}"; do
    read -r name kind path <<<"$t"
    while [ ${#running[@]} -ge "$jobs" ]; do reap; done
    start_test "$name" "$kind" "$path"
    running+=("$name")
done
while [ ${#running[@]} -gt 0 ]; do reap; done
wait

total=$((($(now_ns) - total_start) / 1000000000))
[ "$failed" -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed ($total s, -j $jobs)"
[ "$failed" -eq 0 ]
