// logger.h: the training log, <output_dir>/main.log, one line per event:
//   s:<step> trl:<train loss> lr:<learning rate> norm:<gradient norm>     (every training step)
//   s:<step> tel:<validation loss>                                          (every evaluation)
// Only rank 0 writes it. Every line is flushed, so a crash loses at most the line being written and
// the log can be followed (tail -f, plotting scripts) while the run goes on.
//
// Resuming: a resumed run must not log a step twice (the crashed run may have logged past its last
// checkpoint). logger_init with resume_step = R keeps only the lines whose step is <= R, then appends;
// R is the last step whose lines the resumed run does not write again. The rewrite goes through
// AtomicFile, so a crash during it leaves the old log intact.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "utils.h"

// Create the directory `path` if it does not exist (one level, like mkdir without -p; an existing
// directory is fine). Fails clearly if it exists as something else or cannot be created.
inline void make_dir_check(const char* path) {
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return;
        fail("'%s' exists but is not a directory (expected an output directory)", path);
    }
    if (mkdir(path, 0755) != 0) {
        if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return; // created concurrently
        fail("could not create directory '%s': %s", path, strerror(errno));
    }
}

struct Logger {
    FILE* fp = nullptr; // null: logging disabled (no output dir, or rank != 0)
    std::string path;
};

// Step of a log line ("s:<step> ..."), or false if the line does not start that way.
inline bool logger_line_step_(const char* line, int* step) {
    return sscanf(line, "s:%d", step) == 1;
}

// output_dir null or "": no log. resume_step < 0: a fresh run, truncate the log; otherwise keep only
// the lines with s: <= resume_step (lines without a step are dropped too) and append after them.
inline void logger_init(Logger* lg, const char* output_dir, int process_rank, int resume_step) {
    lg->fp = nullptr;
    lg->path.clear();
    if (output_dir == nullptr || output_dir[0] == '\0' || process_rank != 0) return;
    make_dir_check(output_dir);
    lg->path = std::string(output_dir) + "/main.log";
    if (resume_step >= 0 && file_exists(lg->path.c_str())) {
        std::vector<std::string> keep;
        {
            File in(lg->path.c_str(), "r");
            char buf[1024];
            std::string line;
            while (fgets(buf, sizeof(buf), in.fp) != nullptr) {
                line += buf;
                if (line.back() != '\n' && !feof(in.fp)) continue; // a line longer than buf: keep reading
                int step;
                if (logger_line_step_(line.c_str(), &step) && step <= resume_step) {
                    if (line.back() != '\n') line += '\n'; // a last line cut off by a crash
                    keep.push_back(line);
                }
                line.clear();
            }
        }
        AtomicFile out(lg->path.c_str());
        for (const std::string& l : keep) out.write(l.data(), 1, l.size());
        out.commit();
        lg->fp = fopen_check(lg->path.c_str(), "a");
    } else {
        lg->fp = fopen_check(lg->path.c_str(), "w");
    }
}

inline void logger_write_(Logger* lg, const char* line) {
    if (launcher_is_gone()) { // the job is over (llmc/watchdog.h): a restarted run may own the log now
        fail("the launcher of this process (pid %d) is gone: the job is over, '%s' is not written",
             (int)expected_launcher(), lg->path.c_str());
    }
    if (fputs(line, lg->fp) < 0 || fflush(lg->fp) != 0) {
        fail("could not write to log '%s': %s", lg->path.c_str(), strerror(errno));
    }
}

inline void logger_log_train(Logger* lg, int step, float loss, float lr, float grad_norm) {
    if (lg->fp == nullptr) return;
    char line[256];
    snprintf(line, sizeof(line), "s:%d trl:%.6f lr:%.6e norm:%.6f\n", step, (double)loss, (double)lr,
             (double)grad_norm);
    logger_write_(lg, line);
}

inline void logger_log_val(Logger* lg, int step, float val_loss) {
    if (lg->fp == nullptr) return;
    char line[128];
    snprintf(line, sizeof(line), "s:%d tel:%.6f\n", step, (double)val_loss);
    logger_write_(lg, line);
}

inline void logger_free(Logger* lg) {
    if (lg->fp != nullptr) fclose_check(lg->fp, lg->path.c_str());
    lg->fp = nullptr;
}
