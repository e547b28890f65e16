// tokenizer: GPT-2 BPE from the command line.
//
//   ./tokenizer < text.txt                  UTF-8 text on stdin -> space-separated token ids on stdout
//   ./tokenizer --decode < ids.txt          token ids (separated by white space) on stdin -> text on stdout
//   ./tokenizer --write-bin PATH            write llm.c's gpt2_tokenizer.bin (decode-only table) to PATH
#include <cstdio>
#include <string>
#include <vector>

#include "llmc/tokenizer.h"
#include "llmc/utils.h"

static void usage(FILE* out) {
    fprintf(
        out,
        "usage: ./tokenizer [options]\n"
        "GPT-2 byte-level BPE. By default reads UTF-8 text on stdin and prints its token ids, separated by\n"
        "spaces, on one line.\n"
        "options:\n"
        "  --decode          read token ids (separated by white space) on stdin and print their text\n"
        "  --allow-special   when encoding, \"<|endoftext|>\" in the text becomes token 50256\n"
        "                    (without it, it is encoded as ordinary text)\n"
        "  --write-bin PATH  write llm.c's gpt2_tokenizer.bin to PATH and exit\n"
        "  --encoder PATH    encoder.json (default data/gpt2/encoder.json)\n"
        "  --bpe PATH        vocab.bpe (default data/gpt2/vocab.bpe)\n"
        "  -h, --help        this message\n");
}

static std::string read_stdin() {
    std::string data;
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), stdin)) > 0) data.append(buf, got);
    if (ferror(stdin)) fail("could not read stdin: %s", strerror(errno));
    return data;
}

static bool is_ascii_space(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

// Whitespace-separated decimal ids; anything else fails naming the offending word and its position.
static std::vector<int> parse_ids(const std::string& text, int vocab_size) {
    std::vector<int> ids;
    size_t i = 0;
    while (true) {
        while (i < text.size() && is_ascii_space(text[i])) i++;
        if (i >= text.size()) break;
        size_t start = i;
        while (i < text.size() && !is_ascii_space(text[i])) i++;
        std::string word = text.substr(start, i - start);
        bool digits = word.size() <= 9;
        for (char c : word) digits = digits && c >= '0' && c <= '9';
        if (!digits) {
            fail("--decode: token %zu on stdin is '%s', expected a non-negative integer id", ids.size() + 1,
                 word.c_str());
        }
        int id = atoi(word.c_str());
        if (id >= vocab_size) {
            fail("--decode: token %zu on stdin is %d, out of range: the vocab has ids 0..%d", ids.size() + 1,
                 id, vocab_size - 1);
        }
        ids.push_back(id);
    }
    return ids;
}

int main(int argc, char** argv) {
    program_init();
    const char* encoder_path = "data/gpt2/encoder.json";
    const char* bpe_path = "data/gpt2/vocab.bpe";
    const char* bin_path = nullptr;
    bool decode = false, allow_special = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        bool has_value = i + 1 < argc;
        if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else if (a == "--decode") {
            decode = true;
        } else if (a == "--allow-special") {
            allow_special = true;
        } else if (a == "--write-bin" || a == "--encoder" || a == "--bpe") {
            if (!has_value) fail("flag %s expects a path", a.c_str());
            const char* v = argv[++i];
            if (a == "--write-bin")
                bin_path = v;
            else if (a == "--encoder")
                encoder_path = v;
            else
                bpe_path = v;
        } else {
            fail("unknown argument '%s' (see -h for usage)", a.c_str());
        }
    }
    if (decode && allow_special) fail("--allow-special applies to encoding, not to --decode");

    Tokenizer tok;
    tokenizer_load(&tok, encoder_path, bpe_path);

    if (bin_path) {
        tokenizer_write_bin(&tok, bin_path);
        fprintf(stderr, "wrote %s (%zu tokens, EOT %d)\n", bin_path, tok.tokens.size(), tok.eot_token);
        return 0;
    }
    std::string input = read_stdin();
    if (decode) {
        std::string text = tokenizer_decode(&tok, parse_ids(input, (int)tok.tokens.size()));
        fwrite_check(text.data(), 1, text.size(), stdout, "stdout");
    } else {
        std::vector<int> ids = tokenizer_encode(&tok, input, allow_special);
        std::string line;
        for (size_t i = 0; i < ids.size(); i++) {
            if (i) line.push_back(' ');
            line += std::to_string(ids[i]);
        }
        line.push_back('\n');
        fwrite_check(line.data(), 1, line.size(), stdout, "stdout");
    }
    if (fflush(stdout) != 0) fail("could not write stdout: %s", strerror(errno));
    return 0;
}
