// utils.h: checked I/O and error reporting shared by every program in the project.
//
// The rule is "errors at the edge": every call that touches a file, memory or the command line goes
// through one of these wrappers, which print what went wrong, naming the file and what was expected,
// then exit with a non-zero status. The math code never checks anything.
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

// Text put before every error message: "[rank R of N] " when several processes run (process_group_init
// sets it), so a failure under mpirun says which process hit it. Empty for a single process.
inline std::string& error_context() {
    static std::string context;
    return context;
}

// Print "error: <message>" to stderr and exit(1). Under mpirun a non-zero exit of one rank makes the
// launcher stop every other rank, so this is also the multi-process failure path.
[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void fail(const char* fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "error: %s", error_context().c_str());
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\n");
    fflush(stderr);
    exit(EXIT_FAILURE);
}

// ----------------------------------------------------------------------------------------------------
// files

inline FILE* fopen_check(const char* path, const char* mode) {
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

// Size of a file in bytes, or fail naming it.
inline size_t file_size_check(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fail("could not open '%s': %s", path, strerror(errno));
    }
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
// If the writer dies (or returns early) before commit(), the destructor removes the temporary and the
// old file, if any, is untouched.
struct AtomicFile {
    FILE* fp = nullptr;
    std::string path, tmp_path;
    explicit AtomicFile(const char* p) : path(p), tmp_path(std::string(p) + ".tmp") {
        fp = fopen_check(tmp_path.c_str(), "wb");
    }
    ~AtomicFile() {
        if (fp) {
            fclose(fp);
            remove(tmp_path.c_str());
        }
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
        if (rename(tmp_path.c_str(), path.c_str()) != 0) {
            fail("could not rename '%s' to '%s': %s", tmp_path.c_str(), path.c_str(), strerror(errno));
        }
    }
};

// ----------------------------------------------------------------------------------------------------
// memory

inline void* malloc_check(size_t size, const char* what) {
    void* ptr = malloc(size);
    if (ptr == nullptr && size > 0) {
        fail("out of memory: could not allocate %zu bytes for %s", size, what);
    }
    return ptr;
}

inline void* calloc_check(size_t count, size_t size, const char* what) {
    void* ptr = calloc(count, size);
    if (ptr == nullptr && count > 0 && size > 0) {
        fail("out of memory: could not allocate %zu bytes for %s", count * size, what);
    }
    return ptr;
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

inline float parse_float_flag(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    float v = strtof(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno != 0) {
        fail("flag %s expects a number, got '%s'", flag, text);
    }
    return v;
}

inline int ceil_div(int a, int b) {
    return (a + b - 1) / b;
}
inline size_t ceil_div(size_t a, size_t b) {
    return (a + b - 1) / b;
}
