// test_common.h: what the C++ unit tests share: a CHECK that counts and reports failures without stopping,
// and running a case that must fail (fail() exits the process) in a child process with its stderr captured.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "llmc/utils.h"

static int g_failures = 0;
static int g_checks = 0;

// CHECK(condition, printf-style message): counts the check; on failure prints the file, line, condition
// and the message (the first 50 failures only, so a broken loop does not flood the log).
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        g_checks++;                                                                                          \
        if (!(cond)) {                                                                                       \
            if (++g_failures <= 50) {                                                                        \
                printf("  FAIL (%s:%d) %s: ", __FILE__, __LINE__, #cond);                                    \
                printf(__VA_ARGS__);                                                                         \
                printf("\n");                                                                                \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

// check(ok, printf-style description): counts the check and prints one line, "ok   ..." or "FAIL ...",
// for tests that report every check, not only the failures
static void check(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void check(bool ok, const char* fmt, ...) {
    g_checks++;
    if (!ok) g_failures++;
    printf("%s ", ok ? "ok  " : "FAIL");
    va_list args;
    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);
    printf("\n");
    fflush(stdout);
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
