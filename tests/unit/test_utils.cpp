// Checks of llmc/utils.h: AtomicFile never leaves a half-written file under the final name (a writer that
// returns early, or is killed by SIGKILL in the middle of writing, leaves the old file intact), and the
// flag parsers accept whole numbers only.
#include <csignal>
#include <string>
#include <sys/wait.h>

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
    remove(path.c_str());
    rmdir(dir.c_str());
    return test_summary("test_utils");
}
