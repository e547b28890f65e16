// tokenizer_driver: the C++ side of tests/data/test_tokenizer*.sh (build/tests/tokenizer_driver). Each
// subcommand either prints something the script compares with an independent Python reference, or checks
// a property itself, printing each check and exiting non-zero if one failed.
//
//   encode-hex [OPTION]    stdin: one text per line, in hex -> one line of ids each; OPTION --allow-special,
//                          or --heap / --loop: every chunk through bpe_chunk_heap / bpe_chunk
//   chunks-hex             the same texts -> the byte lengths of their pre-tokenizer chunks
//   classes                unicode_class() of every code point, as runs "lo hi class"
//   roundtrip FILE         decode(encode(FILE)) == FILE, with and without specials
//   random N SEED          round trip of N random byte strings; cache consistency
//   special                "<|endoftext|>" handling, both ways
//   decoder-bin PATH       token_decoder_load(PATH) matches the loaded Tokenizer
//   decoder-piece PATH ID  prints token ID of PATH as bytes (fails on a bad id)
//   decode ID...           tokenizer_decode of the ids (fails on a bad id)
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "llmc/tokenizer.h"
#include "llmc/utils.h"
#include "tests/common/test_common.h"

static const char* kEncoder = "data/gpt2/encoder.json";
static const char* kBpe = "data/gpt2/vocab.bpe";

static std::string ids_line(const std::vector<int>& ids) {
    std::string line;
    for (size_t i = 0; i < ids.size(); i++) {
        if (i) line.push_back(' ');
        line += std::to_string(ids[i]);
    }
    return line;
}

static std::string from_hex(const std::string& hex) {
    if (hex.size() % 2) fail("hex line of odd length %zu", hex.size());
    std::string out;
    for (size_t i = 0; i < hex.size(); i += 2) out.push_back((char)std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

// chunks: print the byte length of each gpt2_chunk_end() chunk instead of the ids
static int cmd_encode_hex(Tokenizer* t, bool allow_special, bool chunks) {
    std::string data;
    char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), stdin)) > 0) data.append(buf, got);
    size_t pos = 0;
    while (pos < data.size()) {
        size_t eol = data.find('\n', pos);
        if (eol == std::string::npos) eol = data.size();
        std::string line = data.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::string text = from_hex(line);
        if (!chunks) {
            printf("%s\n", ids_line(tokenizer_encode(t, text, allow_special)).c_str());
            continue;
        }
        std::vector<int> lengths;
        const unsigned char* s = (const unsigned char*)text.data();
        for (size_t i = 0; i < text.size();) {
            size_t end = gpt2_chunk_end(s, text.size(), i);
            lengths.push_back((int)(end - i));
            i = end;
        }
        printf("%s\n", ids_line(lengths).c_str());
    }
    return 0;
}

static int cmd_classes() {
    const char* names[] = {"other", "L", "N", "S"};
    uint32_t run_start = 0;
    UnicodeClass run_cls = UCLASS_OTHER;
    for (uint32_t cp = 0; cp <= 0x110000; cp++) {
        UnicodeClass c = cp < 0x110000 ? unicode_class(cp) : UCLASS_OTHER;
        if (c != run_cls) {
            if (run_cls != UCLASS_OTHER) printf("%X %X %s\n", run_start, cp - 1, names[run_cls]);
            run_start = cp;
            run_cls = c;
        }
    }
    return 0;
}

static int cmd_roundtrip(Tokenizer* t, const char* path) {
    std::string text = tokenizer_read_file(path);
    std::vector<int> ids = tokenizer_encode(t, text, false);
    printf("%s: %zu bytes -> %zu tokens\n", path, text.size(), ids.size());
    CHECK(tokenizer_decode(t, ids) == text, "decode(encode(file)) == file");
    CHECK(tokenizer_decode(t, tokenizer_encode(t, text, true)) == text,
          "decode(encode(file, allow_special)) == file");
    return test_summary("tokenizer_driver roundtrip");
}

// Random byte strings from a mix of alphabets, so that pre-tokenizer boundaries, multi-byte characters
// and invalid bytes all occur often.
static std::string random_bytes(std::mt19937& rng) {
    static const char* pieces[] = {" ",
                                   "  ",
                                   "\n",
                                   "\t",
                                   "\r\n",
                                   "'s",
                                   "'",
                                   "a",
                                   "Z",
                                   "7",
                                   ".",
                                   "\xc3\xa9",
                                   "\xe4\xbd\xa0",
                                   "\xf0\x9f\x98\x80",
                                   "\xc2\xa0",
                                   "\xe3\x80\x80",
                                   "\xcc\x81",
                                   "\xe2\x80\x8d",
                                   "<|endoftext|>",
                                   "<|"};
    std::uniform_int_distribution<int> len_dist(0, 60), kind(0, 3), byte(0, 255);
    std::uniform_int_distribution<size_t> piece(0, sizeof(pieces) / sizeof(pieces[0]) - 1);
    std::string s;
    int len = len_dist(rng);
    for (int i = 0; i < len; i++) {
        if (kind(rng) == 0)
            s.push_back((char)byte(rng));
        else
            s += pieces[piece(rng)];
    }
    return s;
}

static int cmd_random(Tokenizer* t, int n, unsigned seed) {
    std::mt19937 rng(seed);
    Tokenizer fresh;
    tokenizer_load(&fresh, kEncoder, kBpe);
    fresh.max_cache_entries = 8; // cleared all the time: exercises the clearing path
    int bad_roundtrip = 0, bad_cache = 0;
    for (int i = 0; i < n; i++) {
        std::string s = random_bytes(rng);
        for (int special = 0; special < 2; special++) {
            std::vector<int> ids = tokenizer_encode(t, s, special);
            if (tokenizer_decode(t, ids) != s) bad_roundtrip++;
            // encoding with an empty or tiny cache must give the same ids as with a warm one
            if (tokenizer_encode(&fresh, s, special) != ids) bad_cache++;
        }
    }
    printf("%d random byte strings (seed %u), each encoded with and without allow_special\n", n, seed);
    CHECK(bad_roundtrip == 0, "decode(encode(x)) == x for every random byte string");
    CHECK(bad_cache == 0, "a tiny, often cleared cache and a large warm one give the same ids");
    return test_summary("tokenizer_driver random");
}

static int cmd_special(Tokenizer* t) {
    const std::string eot = "<|endoftext|>";
    CHECK(t->eot_token == 50256, "encoder.json gives <|endoftext|> id 50256");
    CHECK(tokenizer_encode(t, eot, true) == std::vector<int>(1, t->eot_token),
          "allow_special: \"<|endoftext|>\" -> [50256]");
    std::vector<int> plain = tokenizer_encode(t, eot, false);
    bool has_eot = false;
    for (int id : plain) has_eot = has_eot || id == t->eot_token;
    CHECK(plain.size() > 1 && !has_eot,
          "no allow_special: \"<|endoftext|>\" is several ordinary tokens, not 50256");
    CHECK(tokenizer_decode(t, plain) == eot,
          "no allow_special: those tokens decode back to \"<|endoftext|>\"");

    // a + EOT + b + EOT + EOT -> encode(a) + [eot] + encode(b) + [eot, eot]: the pieces are encoded
    // separately
    std::string a = "Hello world.", b = " It's\n\n";
    std::vector<int> want = tokenizer_encode(t, a, false);
    want.push_back(t->eot_token);
    std::vector<int> wb = tokenizer_encode(t, b, false);
    want.insert(want.end(), wb.begin(), wb.end());
    want.push_back(t->eot_token);
    want.push_back(t->eot_token);
    std::string text = a + eot + b + eot + eot;
    CHECK(tokenizer_encode(t, text, true) == want,
          "allow_special: text around each <|endoftext|> is encoded on its own, specials are single tokens");
    CHECK(tokenizer_decode(t, want) == text, "decode: 50256 -> \"<|endoftext|>\"");
    CHECK(tokenizer_encode(t, "<|endoftext|", true) == tokenizer_encode(t, "<|endoftext|", false),
          "allow_special: an incomplete \"<|endoftext|\" is ordinary text");
    return test_summary("tokenizer_driver special");
}

static int cmd_decoder_bin(Tokenizer* t, const char* path) {
    TokenDecoder d;
    token_decoder_load(&d, path);
    CHECK(d.vocab_size == (int)t->tokens.size(), "vocab size in the .bin equals encoder.json's");
    CHECK(d.eot_token == t->eot_token, "EOT id in the .bin equals encoder.json's <|endoftext|>");
    bool same = true;
    for (int id = 0; id < d.vocab_size; id++) same = same && token_decoder_piece(&d, id) == t->tokens[id];
    CHECK(same, "every token's bytes in the .bin equal the Tokenizer's");
    return test_summary("tokenizer_driver decoder-bin");
}

int main(int argc, char** argv) {
    program_init();
    test_list_checks();
    if (argc < 2) fail("usage: tokenizer_driver <subcommand> ... (see tests/data/tokenizer_driver.cpp)");
    std::string cmd = argv[1];
    if (cmd == "classes") return cmd_classes();
    if (cmd == "decoder-piece") {
        if (argc != 4) fail("usage: tokenizer_driver decoder-piece PATH ID");
        TokenDecoder d;
        token_decoder_load(&d, argv[2]);
        const std::string& piece = token_decoder_piece(&d, (int)parse_long_flag("ID", argv[3]));
        fwrite_check(piece.data(), 1, piece.size(), stdout, "stdout");
        return 0;
    }
    Tokenizer t;
    tokenizer_load(&t, kEncoder, kBpe);
    if (cmd == "encode-hex") {
        std::string opt = argc > 2 ? argv[2] : "";
        if (opt == "--heap") t.heap_bpe_min_bytes = 0;
        if (opt == "--loop") t.heap_bpe_min_bytes = SIZE_MAX;
        if (opt == "--heap" && !t.merges_ordered) fail("vocab.bpe's merges are not ordered: no heap BPE");
        return cmd_encode_hex(&t, opt == "--allow-special", false);
    }
    if (cmd == "chunks-hex") return cmd_encode_hex(&t, false, true);
    if (cmd == "roundtrip" && argc == 3) return cmd_roundtrip(&t, argv[2]);
    if (cmd == "random" && argc == 4) {
        return cmd_random(&t, (int)parse_long_flag("N", argv[2]), (unsigned)parse_long_flag("SEED", argv[3]));
    }
    if (cmd == "special") return cmd_special(&t);
    if (cmd == "decoder-bin" && argc == 3) return cmd_decoder_bin(&t, argv[2]);
    if (cmd == "decode") {
        std::vector<int> ids;
        for (int i = 2; i < argc; i++) ids.push_back((int)parse_long_flag("ID", argv[i]));
        std::string s = tokenizer_decode(&t, ids);
        fwrite_check(s.data(), 1, s.size(), stdout, "stdout");
        return 0;
    }
    fail("unknown subcommand or wrong arguments: '%s'", cmd.c_str());
}
