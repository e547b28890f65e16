// Checks of llmc/utils.h: AtomicFile never leaves a half-written file under the final name (a writer that
// returns early, or is killed by SIGKILL in the middle of writing, leaves the old file intact) and leaves
// no temporary behind when it fails or is signalled; the flag parsers accept whole, finite numbers only;
// special files (FIFO, directory) are refused before they are opened; size arithmetic fails instead of
// wrapping; and llmc/crc32.h gives the published CRC-32 check values.
#include <csignal>
#include <sys/stat.h>
#include <string>
#include <sys/wait.h>

#include "llmc/crc32.h"
#include "llmc/utils.h"
#include "tests/common/test_common.h"

static std::string read_all(const std::string& path) {
    FILE* fp = fopen(path.c_str(), "rb");
    if (!fp) return "<missing>";
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) s.append(buf, n);
    fclose(fp);
    return s;
}

static void write_plain(const std::string& path, const std::string& text) {
    FILE* fp = fopen(path.c_str(), "wb");
    fwrite(text.data(), 1, text.size(), fp);
    fclose(fp);
}

int main() {
    char dir_template[] = "/tmp/test_utils_XXXXXX";
    std::string dir = mkdtemp(dir_template);
    std::string path = dir + "/model.bin";

    // 1. a committed write replaces the file
    write_plain(path, "old checkpoint");
    {
        AtomicFile f(path.c_str());
        f.write("new checkpoint", 1, 14);
        f.commit();
    }
    CHECK(read_all(path) == "new checkpoint", "commit did not replace the file: '%s'",
          read_all(path).c_str());
    CHECK(!file_exists((path + ".tmp").c_str()), "the temporary file is left after commit");

    // 2. a writer that stops before commit (an early return, an exception) leaves the old file
    {
        AtomicFile f(path.c_str());
        f.write("half", 1, 4);
    }
    CHECK(read_all(path) == "new checkpoint", "an uncommitted write changed the file: '%s'",
          read_all(path).c_str());
    CHECK(!file_exists((path + ".tmp").c_str()), "the destructor left the temporary file");

    // 3. a writer killed mid-write (SIGKILL: no destructor, no atexit) leaves the old file
    pid_t pid = fork();
    if (pid == 0) {
        AtomicFile f(path.c_str());
        std::string big(1 << 20, 'x');
        f.write(big.data(), 1, big.size());
        fflush(f.fp);
        raise(SIGKILL);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child was not killed as planned");
    CHECK(read_all(path) == "new checkpoint", "a writer killed mid-write changed the file");
    CHECK(read_all(path + ".tmp").size() == (1 << 20), "the killed writer's bytes were not in the temporary");

    // 4. flag parsing takes whole numbers only (the failure path is exercised by
    // tests/train/test_trainer_errors.sh)
    CHECK(parse_long_flag("-b", "64") == 64, "parse_long_flag 64");
    CHECK(parse_long_flag("-x", "-1") == -1, "parse_long_flag -1");
    CHECK(parse_float_flag("-l", "6e-4") == 6e-4f, "parse_float_flag 6e-4");

    remove((path + ".tmp").c_str());
    // 5. no exit path leaves a temporary: fail() and SIGTERM in the middle of a write remove it
    const std::string tmp = path + ".tmp";
    expect_failure("fail() during an atomic write",
                   [&] {
                       AtomicFile f(path.c_str());
                       f.write("half", 1, 4);
                       fflush(f.fp);
                       fail("disk full (planted)");
                   },
                   {"disk full (planted)"});
    CHECK(!file_exists(tmp.c_str()), "fail() left '%s' behind", tmp.c_str());
    {
        ChildResult r = run_child([&] {
            program_init(); // installs the signal handlers
            AtomicFile f(path.c_str());
            f.write("half", 1, 4);
            fflush(f.fp);
            raise(SIGTERM);
        });
        CHECK(r.exit_code != 0, "SIGTERM: the child exited with %d", r.exit_code);
        CHECK(!file_exists(tmp.c_str()), "SIGTERM left '%s' behind", tmp.c_str());
    }
    CHECK(read_all(path) == "new checkpoint", "a failed write changed the file: '%s'",
          read_all(path).c_str());

    // 6. special files are refused before they are opened: a FIFO would block open() forever
    const std::string fifo = dir + "/fifo";
    CHECK(mkfifo(fifo.c_str(), 0600) == 0, "mkfifo");
    expect_failure("a FIFO to read", [&] { File f(fifo.c_str(), "rb"); }, {"not a regular file", "fifo"});
    expect_failure("a FIFO to write atomically", [&] { AtomicFile f(fifo.c_str()); }, {"not a regular file"});
    expect_failure("a directory to read", [&] { File f(dir.c_str(), "rb"); }, {"is a directory"});
    expect_failure("the size of a directory", [&] { file_size_check(dir.c_str()); }, {"is a directory"});

    // 7. sizes: products and sums that do not fit in 64 bits fail, naming what was sized
    CHECK(mul_check((size_t)1 << 31, (size_t)1 << 31, "x") == (size_t)1 << 62, "mul_check of 2^31 * 2^31");
    expect_failure("mul_check overflow", [] { mul_check((size_t)1 << 32, (size_t)1 << 32, "C*C"); },
                   {"C*C", "does not fit in 64 bits"});
    expect_failure("add_check overflow", [] { add_check(SIZE_MAX, 1, "the file size"); }, {"the file size"});
    expect_failure("a NaN flag", [] { parse_float_flag("-l", "nan"); }, {"-l", "finite"});
    expect_failure("an inf flag", [] { parse_float_flag("-l", "inf"); }, {"-l", "finite"});
    expect_failure("an overflowing float flag", [] { parse_float_flag("-l", "1e39"); }, {"-l"});

    // 8. CRC-32: the standard check value of "123456789" (0xCBF43926), of 32 zero bytes (0x190A55AD, as
    // Python's zlib.crc32(bytes(32)) gives), and the same value when the data is fed in pieces of every split
    // (the 8-byte loop and the byte loop meet at every offset)
    const char* digits = "123456789";
    CHECK(crc32_update(0, digits, 9) == 0xCBF43926u, "crc32(123456789) = %08x", crc32_update(0, digits, 9));
    const unsigned char zeros[32] = {};
    CHECK(crc32_update(0, zeros, 32) == 0x190A55ADu, "crc32(32 zeros) = %08x", crc32_update(0, zeros, 32));
    for (size_t split = 0; split <= 9; split++) {
        CHECK(crc32_update(crc32_update(0, digits, split), digits + split, 9 - split) == 0xCBF43926u,
              "crc32 in pieces split at %zu", split);
    }
    remove(fifo.c_str());
    remove(path.c_str());
    rmdir(dir.c_str());
    return test_summary("test_utils");
}
