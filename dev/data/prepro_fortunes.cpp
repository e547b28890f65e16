// prepro_fortunes: the fortune-mod quotations (Debian package `fortunes`, BSD licence: see
// /usr/share/doc/fortunes/copyright) -> GPT-2 token shards: a second English corpus, unlike Tiny Shakespeare
// (short modern quips, jokes and quotations rather than one play's verse), for fine-tuning experiments.
//
// Each file of the directory (sorted by name; ascii-art, the pictures, left out; the .dat indexes and .u8
// links skipped) holds quotations separated by lines holding only "%". Every quotation is one document:
// <|endoftext|>, then its text with its final newline. The documents are numbered in file order; every tenth
// (0, 10, 20, ...) goes to the validation split, the rest to the training split, so both splits cover every
// topic file (the files are topics: computers, literature, science...).
//
//   ./prepro_fortunes [--input-dir DIR] [--out-dir DIR] [--encoder PATH] [--bpe PATH]
// Writes DIR/fortunes_val.bin and DIR/fortunes_train.bin (llm.c shards, dev/data/prepro_shards.h).
#include <string>
#include <vector>

#include "dev/data/prepro_shards.h"

// The corpus files of dir: regular files without a dot in their name (not the .dat indexes or .u8 links),
// except the pictures of ascii-art; sorted.
static std::vector<std::string> fortune_files(const std::string& dir) {
    std::vector<std::string> names =
        list_dir(dir.c_str(), "the fortunes directory",
                 " (install Debian's package: apt-get install fortunes)", [&](const std::string& name) {
                     struct stat st;
                     return name.find('.') == std::string::npos && name != "ascii-art" &&
                            stat((dir + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode);
                 });
    if (names.empty()) fail("'%s' holds no fortune files", dir.c_str());
    return names;
}

int main(int argc, char** argv) {
    program_init();
    std::string input_dir = "/usr/share/games/fortunes", out_dir = "data/fortunes";
    std::string encoder_path = "data/gpt2/encoder.json", bpe_path = "data/gpt2/vocab.bpe";
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            printf(
                "usage: ./prepro_fortunes [--input-dir DIR] [--out-dir DIR] [--encoder PATH] [--bpe PATH]\n"
                "Writes DIR/fortunes_val.bin (every tenth quotation) and DIR/fortunes_train.bin.\n"
                "Defaults: %s, %s, %s, %s\n",
                input_dir.c_str(), out_dir.c_str(), encoder_path.c_str(), bpe_path.c_str());
            return 0;
        }
        std::string* target = a == "--input-dir" ? &input_dir
                              : a == "--out-dir" ? &out_dir
                              : a == "--encoder" ? &encoder_path
                              : a == "--bpe"     ? &bpe_path
                                                 : nullptr;
        if (!target) fail("unknown argument '%s' (see --help)", a.c_str());
        if (i + 1 >= argc) fail("flag %s expects a path", a.c_str());
        *target = argv[++i];
    }
    const std::vector<std::string> files = fortune_files(input_dir);
    // every output is checked before the first is written (dev/data/prepro_shards.h)
    Tokenizer tok;
    prepro_load_tokenizer(&tok, encoder_path, bpe_path, "");
    make_dir_check(out_dir.c_str());
    const std::string val_path = out_dir + "/fortunes_val.bin", train_path = out_dir + "/fortunes_train.bin";
    for (const std::string& path : {val_path, train_path}) check_output_path(path);

    std::vector<int> val, train;
    size_t documents = 0;
    for (const std::string& name : files) {
        const std::string text = tokenizer_read_file((input_dir + "/" + name).c_str());
        // quotations end at a line "%"; the last one of a file may end at the end of the file instead
        size_t pos = 0;
        while (pos < text.size()) {
            size_t sep = text.find("\n%\n", pos);
            size_t end = sep == std::string::npos ? text.size() : sep + 1; // the quotation and its "\n"
            if (text.compare(pos, 2, "%\n") == 0) { // an empty quotation (a "%" line right after another)
                pos += 2;
                continue;
            }
            if (end > pos) {
                prepro_append_document(&tok, text, pos, end, documents % 10 == 0 ? &val : &train);
                documents++;
            }
            if (sep == std::string::npos) break;
            pos = sep + 3;
        }
    }
    if (val.empty() || train.empty()) fail("'%s' gave only %zu quotations", input_dir.c_str(), documents);
    write_shard(val_path.c_str(), val, 0, val.size());
    write_shard(train_path.c_str(), train, 0, train.size());
    printf("%zu quotations from %zu files of '%s'\n", documents, files.size(), input_dir.c_str());
    return 0;
}
