// bench_tokenizer: encoding throughput of llmc/tokenizer.h on one core.
//
//   ./bench_tokenizer [--input PATH] [--runs N]
//
// Encodes the file N times (default 7, input data/tinyshakespeare/input.txt). Every run starts with an empty
// chunk cache, so a run pays for the BPE of every distinct chunk once, as a fresh process would; the
// time includes pre-tokenization, cache look-ups and BPE, not loading encoder.json/vocab.bpe (timed
// separately). Prints the median of the runs.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "llmc/tokenizer.h"
#include "llmc/utils.h"

static double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of this thread: on a shared, loaded machine it is steadier than wall time.
static double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char** argv) {
    std::string input = "data/tinyshakespeare/input.txt";
    int runs = 7;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            printf("usage: ./bench_tokenizer [--input PATH] [--runs N]\n");
            return 0;
        }
        if (i + 1 >= argc) fail("unknown argument '%s' or missing value (see --help)", a.c_str());
        if (a == "--input")
            input = argv[++i];
        else if (a == "--runs")
            runs = (int)parse_long_flag("--runs", argv[++i]);
        else
            fail("unknown argument '%s' (see --help)", a.c_str());
    }
    if (runs < 1) fail("--runs must be at least 1, got %d", runs);

    double t0 = now_seconds();
    Tokenizer tok;
    tokenizer_load(&tok, "data/gpt2/encoder.json", "data/gpt2/vocab.bpe");
    double load_s = now_seconds() - t0;
    std::string text = tokenizer_read_file(input.c_str());

    std::vector<double> times, cpu_times;
    size_t n_tokens = 0;
    for (int r = 0; r < runs; r++) {
        tok.cache.clear(); // a fresh cache: no run profits from the chunks an earlier run saw
        double start = now_seconds(), cpu_start = thread_cpu_seconds();
        std::vector<int> ids = tokenizer_encode(&tok, text, false);
        cpu_times.push_back(thread_cpu_seconds() - cpu_start);
        times.push_back(now_seconds() - start);
        n_tokens = ids.size();
    }
    double median = median_of(times), cpu_median = median_of(cpu_times);

    printf("input: %s, %zu bytes -> %zu tokens (%.3f bytes/token)\n", input.c_str(), text.size(), n_tokens,
           (double)text.size() / n_tokens);
    printf("load encoder.json + vocab.bpe: %.3f s\n", load_s);
    printf("runs (fresh cache each), wall:");
    for (double t : times) printf(" %.4f", t);
    printf(" s\n");
    printf("median wall: %.4f s, %.3e bytes/s, %.2f MB/s, %.3e tokens/s\n", median, text.size() / median,
           text.size() / median / 1e6, n_tokens / median);
    printf("median CPU:  %.4f s, %.3e bytes/s, %.2f MB/s (thread CPU time, one core)\n", cpu_median,
           text.size() / cpu_median, text.size() / cpu_median / 1e6);
    return 0;
}
