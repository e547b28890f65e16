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
#include <string>
#include <vector>

#include "llmc/tokenizer.h"
#include "llmc/utils.h"

static double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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

    std::vector<double> times;
    size_t n_tokens = 0;
    for (int r = 0; r < runs; r++) {
        tok.cache.clear(); // a fresh cache: no run profits from the chunks an earlier run saw
        double start = now_seconds();
        std::vector<int> ids = tokenizer_encode(&tok, text, false);
        times.push_back(now_seconds() - start);
        n_tokens = ids.size();
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    double median = sorted[runs / 2];
    if (runs % 2 == 0) median = 0.5 * (sorted[runs / 2 - 1] + sorted[runs / 2]);

    printf("input: %s, %zu bytes -> %zu tokens (%.3f bytes/token)\n", input.c_str(), text.size(), n_tokens,
           (double)text.size() / n_tokens);
    printf("load encoder.json + vocab.bpe: %.3f s\n", load_s);
    printf("runs (fresh cache each):");
    for (double t : times) printf(" %.4f", t);
    printf(" s\n");
    printf("median: %.4f s, %.3e bytes/s, %.2f MB/s, %.3e tokens/s\n", median, text.size() / median,
           text.size() / median / 1e6, n_tokens / median);
    return 0;
}
