// prepro_tinyshakespeare: Tiny Shakespeare -> GPT-2 token shards for the trainers, as llm.c's
// dev/data/tinyshakespeare.py makes them.
//
// The text is split on "\n\n" into sections (speeches). Each section is preceded by <|endoftext|> (50256)
// and encoded as ordinary text with its "\n\n" put back (except after the last section). Of the resulting
// token stream the first 32,768 tokens are the validation split, the rest the training split.
//
// Shards in llm.c's format (dev/data/prepro_shards.h). Also writes llm.c's gpt2_tokenizer.bin, which the
// trainers use to print samples.
//
//   ./prepro_tinyshakespeare [--input PATH] [--out-dir DIR] [--tokenizer-bin PATH]
//                            [--encoder PATH] [--bpe PATH]
#include <string>
#include <vector>

#include "dev/data/prepro_shards.h"

static const size_t kValTokens = 32768;

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

    // Every output is checked before the first is written, so a vocab that does not fit leaves no files.
    Tokenizer tok;
    prepro_load_tokenizer(&tok, encoder_path, bpe_path, bin_path);
    const std::string val_path = out_dir + "/tiny_shakespeare_val.bin";
    const std::string train_path = out_dir + "/tiny_shakespeare_train.bin";
    for (const std::string& path : {val_path, train_path, bin_path}) check_output_path(path);
    std::string text = tokenizer_read_file(input.c_str());

    std::vector<int> tokens;
    size_t pos = 0;
    while (true) {
        size_t sep = text.find("\n\n", pos);
        size_t end = sep == std::string::npos ? text.size() : sep + 2; // the section and its "\n\n"
        prepro_append_document(&tok, text, pos, end, &tokens);
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
