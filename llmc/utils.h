// utils.h: checked I/O and error reporting shared by every program in the project.
//
// The rule is "errors at the edge": every call that touches a file, memory or the command line goes
// through one of these wrappers, which print what went wrong, naming the file and what was expected,
// then exit with a non-zero status. The math code never checks anything.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <new>
#include <string>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

// Text put before every error message: "[rank R of N] " when several processes run (process_group_init
// sets it), so a failure under mpirun says which process hit it. Empty for a single process.
inline std::string& error_context() {
    static std::string context;
    return context;
}

// ----------------------------------------------------------------------------------------------------
// temporaries: the "<path>.tmp" of every AtomicFile (below) not yet committed. exit() runs no destructors,
// so fail(), the signal handlers and the watchdog (llmc/watchdog.h) remove them here instead: no exit path
// leaves one behind (a leftover from kill -9 is removed when the next run takes the directory,
// llmc/run_dir.h). Fixed-size buffers, so a signal handler can walk them.
constexpr int MAX_PENDING_TEMPS = 8;
struct PendingTemps {
    char paths[MAX_PENDING_TEMPS][4096];
    volatile sig_atomic_t used[MAX_PENDING_TEMPS];
};
inline PendingTemps& pending_temps() {
    static PendingTemps temps;
    return temps;
}
inline int pending_temp_add(const std::string& path) {
    PendingTemps& t = pending_temps();
    for (int i = 0; i < MAX_PENDING_TEMPS; i++) {
        if (!t.used[i] && path.size() < sizeof(t.paths[i])) {
            memcpy(t.paths[i], path.c_str(), path.size() + 1);
            t.used[i] = 1;
            return i;
        }
    }
    return -1; // more than MAX_PENDING_TEMPS at once (never, in this project): only the destructor cleans it
}
inline void pending_temp_remove(int slot) {
    if (slot >= 0) pending_temps().used[slot] = 0;
}
// async-signal-safe: unlink only
inline void remove_pending_temps() {
    PendingTemps& t = pending_temps();
    for (int i = 0; i < MAX_PENDING_TEMPS; i++) {
        if (t.used[i]) {
            unlink(t.paths[i]);
            t.used[i] = 0;
        }
    }
}

// The process that launched this one (mpirun, or its daemon on another node), when the run has one: a rank
// whose launcher is gone (killed) must not write anything more, since the job is over and a restarted run
// may already own the directory. 0: no launcher to watch (a single process, or the GPU trainer's tcp/fs
// bootstrap). Set by llmc/watchdog.h, checked before every commit of a file and every log line.
inline pid_t& expected_launcher() {
    static pid_t pid = 0;
    return pid;
}
inline bool launcher_is_gone() {
    return expected_launcher() != 0 && getppid() != expected_launcher();
}

// Print "error: <message>" to stderr, remove this process's uncommitted temporaries and exit(1). Under
// mpirun a non-zero exit of one rank makes the launcher stop every other rank, so this is also the
// multi-process failure path.
[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void fail(const char* fmt, ...) {
    remove_pending_temps();
    fflush(stdout);
    // the whole line in one write: under mpirun another process's output (MPI_Abort's banner) could
    // otherwise land between its pieces
    char message[4096];
    int n = snprintf(message, sizeof(message), "error: %s", error_context().c_str());
    if (n < 0 || n >= (int)sizeof(message) - 2) n = 0;
    va_list args;
    va_start(args, fmt);
    const int m = vsnprintf(message + n, sizeof(message) - n - 1, fmt, args);
    va_end(args);
    n = m < 0 ? n : std::min(n + m, (int)sizeof(message) - 2);
    message[n] = '\n';
    fwrite(message, 1, (size_t)n + 1, stderr);
    fflush(stderr);
    exit(EXIT_FAILURE);
}

// ----------------------------------------------------------------------------------------------------
// files

// Only regular files are opened: a FIFO blocks at open (a hang), a device reads forever, and a directory
// reads as a truncated file. A path that does not exist is left to fopen (to read: its error; to write: it
// is created).
inline void check_not_special_file(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) fail("'%s' is a directory, expected a file", path);
    if (!S_ISREG(st.st_mode))
        fail("'%s' is not a regular file (a FIFO, socket or device), expected a file", path);
}

inline FILE* fopen_check(const char* path, const char* mode) {
    check_not_special_file(path);
    FILE* fp = fopen(path, mode);
    if (fp == nullptr) {
        fail("could not open '%s' (mode %s): %s", path, mode, strerror(errno));
    }
    return fp;
}

// Read exactly count items or fail; "what" says what we were reading, for the message.
inline void fread_check(void* ptr, size_t size, size_t count, FILE* fp, const char* path, const char* what) {
    size_t got = fread(ptr, size, count, fp);
    if (got != count) {
        fail("'%s' is truncated: expected %zu bytes of %s, got %zu", path, size * count, what, size * got);
    }
}

inline void fwrite_check(const void* ptr, size_t size, size_t count, FILE* fp, const char* path) {
    if (fwrite(ptr, size, count, fp) != count) {
        fail("could not write %zu bytes to '%s': %s", size * count, path, strerror(errno));
    }
}

inline void fseek_check(FILE* fp, long offset, int whence, const char* path) {
    if (fseek(fp, offset, whence) != 0) {
        fail("could not seek in '%s' to offset %ld: %s", path, offset, strerror(errno));
    }
}

inline void fclose_check(FILE* fp, const char* path) {
    if (fclose(fp) != 0) {
        fail("could not close '%s': %s", path, strerror(errno));
    }
}

// The entries of directory dir whose names satisfy keep(name), sorted; fails with "could not open <what>
// '<dir>': <reason><hint>".
template <class Pred>
std::vector<std::string> list_dir(const char* dir, const char* what, const char* hint, Pred keep) {
    DIR* d = opendir(dir);
    if (d == nullptr) fail("could not open %s '%s': %s%s", what, dir, strerror(errno), hint);
    std::vector<std::string> names;
    while (struct dirent* e = readdir(d)) {
        if (keep(std::string(e->d_name))) names.push_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

// Size of a regular file in bytes, or fail naming it.
inline size_t file_size_check(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fail("could not open '%s': %s", path, strerror(errno));
    }
    check_not_special_file(path);
    return (size_t)st.st_size;
}

inline bool file_exists(const char* path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// A FILE* that closes itself: removes the "forgot fclose on the error path" class of bug.
struct File {
    FILE* fp = nullptr;
    std::string path;
    File(const char* p, const char* mode) : fp(fopen_check(p, mode)), path(p) {}
    ~File() {
        if (fp) fclose(fp);
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    void read(void* ptr, size_t size, size_t count, const char* what) {
        fread_check(ptr, size, count, fp, path.c_str(), what);
    }
    void write(const void* ptr, size_t size, size_t count) {
        fwrite_check(ptr, size, count, fp, path.c_str());
    }
};

// Write a file so that a crash never leaves a half-written file under its final name: the bytes go to
// "<path>.tmp", are flushed to disk, and only commit() renames the temporary onto the final path.
// If the writer returns early before commit(), the destructor removes the temporary; if it fails or is
// signalled, fail() and the signal handlers do (pending_temps above). The old file, if any, is untouched.
struct AtomicFile {
    FILE* fp = nullptr;
    std::string path, tmp_path;
    int pending_slot = -1;
    explicit AtomicFile(const char* p) : path(p), tmp_path(std::string(p) + ".tmp") {
        check_not_special_file(p);
        fp = fopen_check(tmp_path.c_str(), "wb");
        pending_slot = pending_temp_add(tmp_path);
    }
    ~AtomicFile() {
        if (fp) {
            fclose(fp);
            remove(tmp_path.c_str());
        }
        pending_temp_remove(pending_slot);
    }
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    void write(const void* ptr, size_t size, size_t count) {
        fwrite_check(ptr, size, count, fp, tmp_path.c_str());
    }
    void commit() {
        if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
            fail("could not flush '%s': %s", tmp_path.c_str(), strerror(errno));
        }
        fclose_check(fp, tmp_path.c_str());
        fp = nullptr;
        if (launcher_is_gone()) {
            fail("the launcher of this process (pid %d) is gone: the job is over, '%s' is not written",
                 (int)expected_launcher(), path.c_str());
        }
        if (rename(tmp_path.c_str(), path.c_str()) != 0) {
            fail("could not rename '%s' to '%s': %s", tmp_path.c_str(), path.c_str(), strerror(errno));
        }
        pending_temp_remove(pending_slot);
        pending_slot = -1;
    }
};

// ----------------------------------------------------------------------------------------------------
// memory

// Buffers of 8 MiB or more (the parameters, gradients, optimizer state, activations) are aligned to 2 MiB
// and asked for transparent huge pages (madvise: Linux's default THP mode gives them only when asked): one
// TLB entry covers 2 MiB instead of 4 KiB, so the matmuls' panels (rows kilobytes apart) and AdamW's
// streams stop missing the TLB at every page. 3-4% off a d12 step on the AVX-512 Xeon of dev/results/. A
// refused advice costs nothing: the memory is then in 4 KiB pages as before.
constexpr size_t HUGE_PAGE_BYTES = (size_t)2 << 20, HUGE_ALLOC_MIN = (size_t)8 << 20;
inline void* malloc_large(size_t size) {
    if (size < HUGE_ALLOC_MIN) return malloc(size);
    void* ptr = nullptr;
    if (posix_memalign(&ptr, HUGE_PAGE_BYTES, size) != 0) return nullptr;
    madvise(ptr, (size + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES, MADV_HUGEPAGE);
    return ptr;
}

inline void* malloc_check(size_t size, const char* what) {
    void* ptr = malloc_large(size);
    if (ptr == nullptr && size > 0) {
        fail("out of memory: could not allocate %zu bytes for %s", size, what);
    }
    return ptr;
}

inline void* calloc_check(size_t count, size_t size, const char* what) {
    if (size > 0 && count > SIZE_MAX / size) fail("out of memory: %zu x %zu bytes for %s", count, size, what);
    void* ptr = malloc_check(count * size, what);
    if (ptr != nullptr) memset(ptr, 0, count * size);
    return ptr;
}

// Bytes of memory this process can still allocate: MemAvailable of /proc/meminfo, lowered to what a cgroup
// (v2) memory limit leaves; 0 when neither can be read (then no check is made).
// A field of /proc/self/status in bytes: "VmRSS" (resident now), "VmHWM" (the peak resident size); 0 where
// it cannot be read.
inline double process_status_bytes(const char* field) {
    double bytes = 0.0;
    if (FILE* f = fopen("/proc/self/status", "r")) {
        char line[256];
        const size_t len = strlen(field);
        unsigned long long kib;
        while (fgets(line, sizeof(line), f) != nullptr) {
            if (strncmp(line, field, len) == 0 && line[len] == ':' &&
                sscanf(line + len + 1, "%llu", &kib) == 1)
                bytes = kib * 1024.0;
        }
        fclose(f);
    }
    return bytes;
}

inline double host_memory_available_bytes() {
    double available = 0.0;
    if (FILE* f = fopen("/proc/meminfo", "r")) {
        char line[256];
        unsigned long long kib;
        while (fgets(line, sizeof(line), f) != nullptr) {
            if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) available = kib * 1024.0;
        }
        fclose(f);
    }
    unsigned long long limit = 0, used = 0;
    FILE* fmax = fopen("/sys/fs/cgroup/memory.max", "r");
    FILE* fcur = fopen("/sys/fs/cgroup/memory.current", "r");
    if (fmax && fcur && fscanf(fmax, "%llu", &limit) == 1 && fscanf(fcur, "%llu", &used) == 1 &&
        limit > used) {
        const double left = (double)(limit - used);
        if (available == 0.0 || left < available) available = left;
    }
    if (fmax) fclose(fmax);
    if (fcur) fclose(fcur);
    return available;
}

// Before a program allocates its big buffers: fails with what it needs (and its parts), what is free and
// what to change, instead of dying of an allocation half-way (or of the kernel's OOM killer).
inline void check_memory_fits(double needed, double available, const char* where, const char* parts,
                              const char* advice) {
    if (available <= 0.0 || needed <= available) return;
    const double GiB = 1024.0 * 1024.0 * 1024.0;
    fail("out of memory: this run needs about %.2f GiB of %s (%s) but %.2f GiB is available: %s",
         needed / GiB, where, parts, available / GiB, advice);
}

// a * b for sizes read from headers and flags: fails, naming what is sized, instead of wrapping around (a
// header claiming C = 2^30 must not size a buffer of (2^30)^2 mod 2^64 elements).
inline size_t mul_check(size_t a, size_t b, const char* what) {
    size_t product;
    if (__builtin_mul_overflow(a, b, &product)) fail("%s: %zu x %zu does not fit in 64 bits", what, a, b);
    return product;
}
inline size_t add_check(size_t a, size_t b, const char* what) {
    size_t sum;
    if (__builtin_add_overflow(a, b, &sum)) fail("%s: %zu + %zu does not fit in 64 bits", what, a, b);
    return sum;
}

// ----------------------------------------------------------------------------------------------------
// process set-up shared by every program: stdout line-buffered (so the start-up lines survive a kill
// even when stdout is a file or a pipe), an allocation failure in C++ code is an error message instead
// of an uncaught std::bad_alloc, SIGINT / SIGTERM / SIGHUP remove the uncommitted temporaries before the
// process dies of the signal as it would have, and a file-size limit (SIGXFSZ, whose default kills) is a
// failed write with its message, like a full disk.
inline void out_of_memory_handler() {
    fail("out of memory: an allocation failed (reduce -b or -t, or use a smaller model)");
}
inline void fatal_signal_handler(int sig) {
    remove_pending_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}
inline void program_init() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    std::set_new_handler(out_of_memory_handler);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, fatal_signal_handler);
    signal(SIGXFSZ, SIG_IGN);
}

// ----------------------------------------------------------------------------------------------------
// command-line numbers: the whole string must parse, else fail naming the flag.

inline long parse_long_flag(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0) {
        fail("flag %s expects an integer, got '%s'", flag, text);
    }
    return v;
}

// A finite number (strtof also reads "nan" and "inf", which no flag means).
inline float parse_float_flag(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    float v = strtof(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || !std::isfinite(v)) {
        fail("flag %s expects a finite number, got '%s'", flag, text);
    }
    return v;
}

inline int ceil_div(int a, int b) {
    return (a + b - 1) / b;
}
inline size_t ceil_div(size_t a, size_t b) {
    return (a + b - 1) / b;
}
