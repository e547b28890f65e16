// run_dir.h: the output directory (-o) belongs to one run at a time, and a fresh run never overwrites one.
//
// - A lock for the run's whole life: every process that writes into the directory holds an flock(2) on
//   <dir>/lock_<rank> (each rank its own, so the ranks of one run do not exclude each other, and a second
//   run on the directory is refused by whichever of its ranks gets there first). The lock file names its
//   holder (pid, host, rank, start time), which the refusal prints. The kernel drops the lock when the
//   process dies, however it dies, so there is never a stale lock to remove by hand.
// - A fresh run (no -y 1) into a directory that holds a run (checkpoint_latest, main.log, model or state
//   files) is refused, naming the way to resume it and the way to start over on purpose (-ow 1, which
//   deletes the old run's files first).
// - Temporaries ("*.tmp") left by a process killed mid-write (kill -9 runs no cleanup) are removed once the
//   lock is held: nobody else can be writing them then.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
#include <unistd.h>
#include <vector>

#include "llmc/logger.h"
#include "llmc/state_file.h"
#include "llmc/utils.h"

inline bool ends_with(const std::string& s, const char* suffix) {
    const size_t n = strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
inline bool starts_with(const std::string& s, const char* prefix) {
    return s.compare(0, strlen(prefix), prefix) == 0;
}

// The files a run writes: checkpoint_latest, main.log, model_<step>.bin, state_<step>_<rank>.bin.
inline bool run_dir_is_run_file(const std::string& name) {
    return name == "checkpoint_latest" || name == "main.log" ||
           ((starts_with(name, "model_") || starts_with(name, "state_")) && ends_with(name, ".bin"));
}

// Takes this rank's lock on dir (creating dir), or fails naming the holder.
inline void run_dir_lock(const char* dir, int rank, int num_ranks) {
    make_dir_check(dir);
    char name[32];
    snprintf(name, sizeof(name), "/lock_%05d", rank);
    const std::string path = std::string(dir) + name;
    check_not_special_file(path.c_str());
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail("could not create the lock file '%s': %s", path.c_str(), strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) fail("could not lock '%s': %s", path.c_str(), strerror(errno));
        char holder[256] = {};
        ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        if (n > 0 && holder[n - 1] == '\n') holder[n - 1] = '\0';
        fail("'%s' is in use by another run: %s holds its lock '%s'. Wait for that run to end or stop it, or "
             "choose another -o",
             dir, n > 0 ? holder : "a process", path.c_str());
    }
    // the holder, for the message above; the fd stays open (and locked) until the process exits
    char host[128] = "?";
    gethostname(host, sizeof(host) - 1);
    char when[32];
    time_t now = time(nullptr);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    char text[256];
    int len = snprintf(text, sizeof(text), "pid %d on %s, rank %d of %d, since %s\n", (int)getpid(), host,
                       rank, num_ranks, when);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) {
        fail("could not write the lock file '%s': %s", path.c_str(), strerror(errno));
    }
}

// Called by every rank before it reads or writes anything in dir. resume: -y 1; overwrite: -ow 1.
inline void run_dir_claim(const char* dir, int rank, int num_ranks, bool resume, bool overwrite) {
    run_dir_lock(dir, rank, num_ranks);
    // this rank's temporaries: state files end in _<rank>.bin.tmp; rank 0 also owns every other one
    char mine[32];
    snprintf(mine, sizeof(mine), "_%05d.bin.tmp", rank);
    for (const std::string& name : list_dir(dir, "the output directory", "", [&](const std::string& n) {
             const bool state = starts_with(n, "state_");
             return ends_with(n, ".tmp") && (ends_with(n, mine) || (rank == 0 && !state));
         })) {
        remove((std::string(dir) + "/" + name).c_str());
    }
    if (resume || rank != 0) return; // rank 0 speaks for the run, with the flags every rank shares
    const std::vector<std::string> old = list_dir(dir, "the output directory", "", run_dir_is_run_file);
    if (old.empty()) return;
    if (!overwrite) {
        const int step = find_latest_checkpoint(dir);
        char what[64];
        if (step >= 0)
            snprintf(what, sizeof(what), "a checkpoint of step %d", step);
        else
            snprintf(what, sizeof(what), "'%s'", old.front().c_str());
        fail("'%s' holds a run (%s, %zu files): resume it with -y 1, start over with -ow 1 (deletes its "
             "checkpoints and log), or choose another -o",
             dir, what, old.size());
    }
    // checkpoint_latest first: if this is interrupted, no half-deleted checkpoint is left looking complete
    std::vector<std::string> order = old;
    std::stable_partition(order.begin(), order.end(),
                          [](const std::string& n) { return n == "checkpoint_latest"; });
    for (const std::string& name : order) {
        const std::string path = std::string(dir) + "/" + name;
        if (remove(path.c_str()) != 0)
            fail("-ow 1: could not delete '%s': %s", path.c_str(), strerror(errno));
    }
    printf("-ow 1: deleted the %zu files of the previous run in '%s'\n", old.size(), dir);
}
