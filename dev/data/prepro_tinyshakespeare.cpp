// prepro_tinyshakespeare: Tiny Shakespeare -> GPT-2 token shards for the trainers, as llm.c's
// dev/data/tinyshakespeare.py makes them.
//
// The text is split on "\n\n" into sections (speeches). Each section is preceded by <|endoftext|> (50256)
// and encoded as ordinary text with its "\n\n" put back (except after the last section). Of the resulting
// token stream the first 32,768 tokens are the validation split, the rest the training split.
//
// Shard format (llm.c): int32 header[256] = {20240520 magic, 1 version, token count, 0...}, then the tokens
// as little-endian uint16. Also writes llm.c's gpt2_tokenizer.bin, which the trainers use to print samples.
//
//   ./prepro_tinyshakespeare [--input PATH] [--out-dir DIR] [--tokenizer-bin PATH]
//                            [--encoder PATH] [--bpe PATH]
#include <string>
#include <vector>

#include "llmc/tokenizer.h"
#include "llmc/utils.h"

static const int kShardMagic = 20240520;
static const size_t kValTokens = 32768;

// Fails unless path can be written: not a directory or FIFO, in a directory we may write. Checked for every
// output before the tokenizing starts, so an unwritable one fails at once and leaves no other file behind.
static void check_output_path(const std::string& path) {
    check_not_special_file(path.c_str());
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || access(dir.c_str(), W_OK) != 0) {
        fail("cannot write '%s': directory '%s': %s", path.c_str(), dir.c_str(), strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) fail("cannot write '%s': '%s' is not a directory", path.c_str(), dir.c_str());
}

// tokens[begin, end) as a shard file, written atomically.
// The caller has checked that every token fits in uint16.
static void write_shard(const char* path, const std::vector<int>& tokens, size_t begin, size_t end) {
    if (end - begin > (size_t)INT32_MAX) { // the header's count is an int32
        fail("cannot write '%s': %zu tokens, more than the 2^31-1 a shard holds (split the input)", path,
             end - begin);
    }
    int32_t header[256] = {0};
    header[0] = kShardMagic;
    header[1] = 1;
    header[2] = (int32_t)(end - begin);
    std::vector<unsigned char> bytes(2 * (end - begin));
    for (size_t i = begin; i < end; i++) {
        int tok = tokens[i];
        bytes[2 * (i - begin)] = (unsigned char)(tok & 0xFF); // little-endian, whatever the host
        bytes[2 * (i - begin) + 1] = (unsigned char)(tok >> 8);
    }
    AtomicFile f(path);
    f.write(header, sizeof(int32_t), 256);
    f.write(bytes.data(), 1, bytes.size());
    f.commit();
    printf("wrote %s: %zu tokens\n", path, end - begin);
}

int main(int argc, char** argv) {
    program_init();
    std::string input = "data/tinyshakespeare/input.txt";
    std::string out_dir = "data/tinyshakespeare";
    std::string bin_path = "data/gpt2_tokenizer.bin";
    std::string encoder_path = "data/gpt2/encoder.json", bpe_path = "data/gpt2/vocab.bpe";
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            printf("usage: ./prepro_tinyshakespeare [--input PATH] [--out-dir DIR] [--tokenizer-bin PATH]\n"
                   "                                [--encoder PATH] [--bpe PATH]\n"
                   "Writes DIR/tiny_shakespeare_val.bin (first %zu tokens), DIR/tiny_shakespeare_train.bin\n"
                   "and the tokenizer table. Defaults: %s, %s, %s, %s, %s\n",
                   kValTokens, input.c_str(), out_dir.c_str(), bin_path.c_str(), encoder_path.c_str(),
                   bpe_path.c_str());
            return 0;
        }
        std::string* target = a == "--input"           ? &input
                              : a == "--out-dir"       ? &out_dir
                              : a == "--tokenizer-bin" ? &bin_path
                              : a == "--encoder"       ? &encoder_path
                              : a == "--bpe"           ? &bpe_path
                                                       : nullptr;
        if (!target) fail("unknown argument '%s' (see --help)", a.c_str());
        if (i + 1 >= argc) fail("flag %s expects a path", a.c_str());
        *target = argv[++i];
    }

    Tokenizer tok;
    tokenizer_load(&tok, encoder_path.c_str(), bpe_path.c_str());
    // Every output is checked before the first is written, so a vocab that does not fit leaves no files.
    // Ids are 0..V-1 (tokenizer_load checks), so V <= 65536 makes every token fit the uint16 shards.
    if (tok.tokens.size() > 65536) {
        fail("'%s' has %zu tokens: ids above 65535 do not fit the uint16 token shards", encoder_path.c_str(),
             tok.tokens.size());
    }
    tokenizer_check_bin_format(&tok, bin_path.c_str());
    const std::string val_path = out_dir + "/tiny_shakespeare_val.bin";
    const std::string train_path = out_dir + "/tiny_shakespeare_train.bin";
    for (const std::string& path : {val_path, train_path, bin_path}) check_output_path(path);
    std::string text = tokenizer_read_file(input.c_str());

    std::vector<int> tokens;
    size_t pos = 0;
    while (true) {
        size_t sep = text.find("\n\n", pos);
        size_t end = sep == std::string::npos ? text.size() : sep + 2; // the section and its "\n\n"
        tokens.push_back(tok.eot_token);
        tokenizer_encode_ordinary(&tok, (const unsigned char*)text.data() + pos, end - pos, &tokens);
        if (sep == std::string::npos) break;
        pos = end;
    }
    if (tokens.size() <= kValTokens) {
        fail("'%s' gives only %zu tokens, fewer than the %zu of the validation split", input.c_str(),
             tokens.size(), kValTokens);
    }
    write_shard(val_path.c_str(), tokens, 0, kValTokens);
    write_shard(train_path.c_str(), tokens, kValTokens, tokens.size());
    tokenizer_write_bin(&tok, bin_path.c_str());
    printf("wrote %s: %zu tokens\n", bin_path.c_str(), tok.tokens.size());
    return 0;
}
