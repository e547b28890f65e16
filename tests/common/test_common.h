// test_common.h: what every C++ test program shares.
//
//   CHECK(cond, fmt, ...)
//       one check, counted. A failure prints "FAIL file:line: <message> [cond]" (the first 50 failures, so
//       a broken loop does not flood the log).
//   CHECK_LE(value, bound, fmt, ...)
//       CHECK(value <= bound) of a measured value (a NaN fails); the line shows both after the message.
//   CHECK_BOUND(cond, value, bound, fmt, ...)
//       the same for any other relation (cond: value < bound, value > bound, ...).
//   test_list_checks()
//       from now on also print "ok   <message>" for each check that holds: for programs whose every check
//       is a line worth reading (a measured error next to its bound).
//   test_summary(program)
//       prints "<program>: N checks passed" or "<program>: F of N checks FAILED"; returns the exit status,
//       1 if a check failed.
//   expect_failure(what, fn, needles)
//       fn, run in a forked child, must exit non-zero (fail() exits the process) with every needle in its
//       stderr. Fork before the program starts OpenMP threads: a child forked after hangs in its first
//       parallel loop.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "llmc/utils.h"

struct TestCounts {
    int checks = 0, failures = 0;
    bool list = false;
};
static TestCounts test_counts;

static inline void test_list_checks() {
    test_counts.list = true;
}
static inline int test_failures() {
    return test_counts.failures;
}

static bool test_vcheck(bool ok, const char* file, int line, const char* cond, const char* fmt,
                        va_list args) {
    test_counts.checks++;
    if (!ok) test_counts.failures++;
    if (ok ? !test_counts.list : test_counts.failures > 50) return ok;
    if (ok) {
        printf("ok   ");
    } else {
        printf("FAIL %s:%d: ", file, line);
    }
    vprintf(fmt, args);
    if (!ok && cond) printf("  [%s]", cond);
    printf("\n");
    fflush(stdout);
    return ok;
}

__attribute__((format(printf, 5, 6))) static inline bool test_check(bool ok, const char* file, int line,
                                                                    const char* cond, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    test_vcheck(ok, file, line, cond, fmt, args);
    va_end(args);
    return ok;
}

// the message padded to a column, then the measured value and the bound it is checked against
static bool test_vcheck_bound(bool ok, double value, double bound, const char* file, int line,
                              const char* fmt, va_list args) {
    char what[512];
    vsnprintf(what, sizeof(what), fmt, args);
    return test_check(ok, file, line, nullptr, "%-72s %.3e (bound %.3g)", what, value, bound);
}
__attribute__((format(printf, 6, 7))) static inline bool
test_check_bound(bool ok, double value, double bound, const char* file, int line, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    test_vcheck_bound(ok, value, bound, file, line, fmt, args);
    va_end(args);
    return ok;
}
__attribute__((format(printf, 5, 6))) static inline bool
test_check_le(double value, double bound, const char* file, int line, const char* fmt, ...) {
    const bool ok = value <= bound; // false for a NaN
    va_list args;
    va_start(args, fmt);
    test_vcheck_bound(ok, value, bound, file, line, fmt, args);
    va_end(args);
    return ok;
}

#define CHECK(cond, ...) test_check(static_cast<bool>(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define CHECK_BOUND(cond, value, bound, ...)                                                                 \
    test_check_bound(static_cast<bool>(cond), static_cast<double>(value), static_cast<double>(bound),        \
                     __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_LE(value, bound, ...)                                                                          \
    test_check_le(static_cast<double>(value), static_cast<double>(bound), __FILE__, __LINE__, __VA_ARGS__)

static inline int test_summary(const char* program) {
    if (test_counts.failures == 0) {
        printf("%s: %d checks passed\n", program, test_counts.checks);
        return 0;
    }
    printf("%s: %d of %d checks FAILED\n", program, test_counts.failures, test_counts.checks);
    return 1;
}

// Run fn in a child process with stderr captured and stdout discarded.
struct ChildResult {
    int exit_code; // -1 if killed by a signal
    std::string err;
};

static inline ChildResult run_child(const std::function<void()>& fn) {
    fflush(stdout);
    fflush(stderr);
    int fds[2];
    if (pipe(fds) != 0) fail("pipe failed");
    pid_t pid = fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        FILE* devnull = freopen("/dev/null", "w", stdout);
        (void)devnull;
        fn();
        _exit(0); // fn returned: no failure
    }
    close(fds[1]);
    ChildResult r{-1, ""};
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof(buf))) > 0) r.err.append(buf, (size_t)got);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    return r;
}

// The case must exit non-zero (not by a signal) with a message containing every needle; prints the message.
static inline void expect_failure(const char* what, const std::function<void()>& fn,
                                  const std::vector<std::string>& needles) {
    ChildResult r = run_child(fn);
    CHECK(r.exit_code > 0, "%s: expected a non-zero exit, got %d", what, r.exit_code);
    for (const std::string& n : needles) {
        CHECK(r.err.find(n) != std::string::npos, "%s: message lacks '%s'; got: %s", what, n.c_str(),
              r.err.c_str());
    }
    printf("  %-44s -> %s", what, r.err.c_str());
    if (r.err.empty() || r.err.back() != '\n') printf("\n");
}
