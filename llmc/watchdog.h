// watchdog.h: no process of a run waits forever, and none outlives its launcher.
//
// A background thread wakes every 100 ms and stops the process (message, uncommitted temporaries removed,
// exit status 1; under mpirun that takes the rest of the job down) when
//   - the launcher is gone: the process was started by mpirun (or its daemon on another node) and its
//     parent process has changed, i.e. mpirun was killed. The job is over; a restarted run may already be
//     writing the same directory, so this process must not write anything more. AtomicFile::commit and the
//     log check the same thing synchronously (llmc/utils.h's launcher_is_gone), so nothing is written in the
//     up to 100 ms before the thread notices;
//   - no progress for the step timeout (several processes only): the training loop reports progress at
//     every micro-step, validation batch, sampled token and checkpoint (watchdog_progress). A peer that is
//     stalled (SIGSTOP, a hung disk) or dead leaves this process blocked inside a collective, which MPI
//     never times out. LLMC_STEP_TIMEOUT_S sets it (default 900 s: a step of the largest model this
//     project trains on a slow machine, with room); 0 turns it off.
// The GPU trainer's waits on NCCL (llmc/nccl_gpu.cuh) use the same timeout.
//
// One watchdog per process, so it is a process-wide object like errno; the thread is detached and the
// object never freed, so an exit() from anywhere does not race with its destruction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <unistd.h>

#include "llmc/utils.h"

// Seconds without progress after which a multi-process run stops: LLMC_STEP_TIMEOUT_S, or 900.
inline double step_timeout_s() {
    const char* text = getenv("LLMC_STEP_TIMEOUT_S");
    if (text == nullptr || text[0] == '\0') return 900.0;
    const float timeout = parse_float_flag("LLMC_STEP_TIMEOUT_S", text);
    if (timeout < 0.0f)
        fail("LLMC_STEP_TIMEOUT_S must be a number of seconds >= 0 (0: none), got '%s'", text);
    return timeout;
}

// Whether this process was started by an MPI launcher (Open MPI, MPICH or anything PMIx-based set these).
inline bool started_by_mpi_launcher() {
    return getenv("OMPI_COMM_WORLD_SIZE") != nullptr || getenv("PMIX_RANK") != nullptr ||
           getenv("PMI_RANK") != nullptr;
}

struct Watchdog {
    std::atomic<long long> last_progress_ms{0};
    std::atomic<const char*> phase{"start-up"}; // what the process was doing at its last progress
    std::atomic<int> step{0};
    std::atomic<double> timeout_s{0.0}; // 0: no progress timeout
    int rank = 0, num_ranks = 1;
    bool started = false;
};
inline Watchdog& watchdog() {
    static Watchdog* w = new Watchdog(); // never destroyed: the thread may run until the process ends
    return *w;
}

inline long long watchdog_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// The process made progress: it is now in `phase` (a string literal) of optimizer step `step` (-1: the
// step stays what it was).
inline void watchdog_progress(const char* phase, int step) {
    Watchdog& w = watchdog();
    w.phase = phase;
    if (step >= 0) w.step = step;
    w.last_progress_ms = watchdog_now_ms();
}

// Prints the reason and stops the process from the watchdog thread (the main thread may be blocked).
inline void watchdog_stop_process(const char* reason) {
    const Watchdog& w = watchdog();
    remove_pending_temps();
    fflush(stdout);
    fprintf(stderr, "error: %s%s (last progress: %s of step %d): stopping\n", error_context().c_str(), reason,
            w.phase.load(), w.step.load());
    fflush(stderr);
    _exit(EXIT_FAILURE);
}

inline void watchdog_loop() {
    Watchdog& w = watchdog();
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (launcher_is_gone()) {
            char reason[128];
            snprintf(reason, sizeof(reason), "the launcher of this process (pid %d) is gone: the job is over",
                     (int)expected_launcher());
            watchdog_stop_process(reason);
        }
        const double idle_s = (watchdog_now_ms() - w.last_progress_ms.load()) / 1000.0;
        if (w.timeout_s > 0.0 && idle_s > w.timeout_s) {
            char reason[256];
            snprintf(
                reason, sizeof(reason),
                "no progress for %.0f s (LLMC_STEP_TIMEOUT_S=%g): a process of this job is stalled or gone",
                idle_s, w.timeout_s.load());
            watchdog_stop_process(reason);
        }
    }
}

// Starts the watchdog of this process (once; later calls only update rank and size): the launcher check
// when an MPI launcher started it, the progress timeout when the run has several processes.
inline void watchdog_start(int rank, int num_ranks) {
    Watchdog& w = watchdog();
    w.rank = rank;
    w.num_ranks = num_ranks;
    w.timeout_s = num_ranks > 1 ? step_timeout_s() : 0.0;
    w.last_progress_ms = watchdog_now_ms();
    if (w.started) return;
    if (started_by_mpi_launcher() && getppid() != 1) expected_launcher() = getppid();
    if (w.timeout_s <= 0.0 && expected_launcher() == 0) return; // nothing to watch
    w.started = true;
    std::thread(watchdog_loop).detach();
}
