// prepro_shards.h: what the data preparation programs (prepro_tinyshakespeare, prepro_fortunes) share: the
// llm.c token shard writer, the check that every output can be written before any is, and the encoding of a
// corpus as documents, each preceded by <|endoftext|>.
//
// Shard format (llm.c): int32 header[256] = {20240520 magic, 1 version, token count, 0...}, then the tokens
// as little-endian uint16.
#pragma once

#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "llmc/logger.h" // make_dir_check
#include "llmc/tokenizer.h"
#include "llmc/utils.h"

constexpr int kShardMagic = 20240520;

// Fails unless path can be written: not a directory or FIFO, in a directory we may write. Checked for every
// output before the tokenizing starts, so an unwritable one fails at once and leaves no other file behind.
inline void check_output_path(const std::string& path) {
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
inline void write_shard(const char* path, const std::vector<int>& tokens, size_t begin, size_t end) {
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

// The tokenizer of encoder_path / bpe_path, refused if its ids do not fit the uint16 shards or (when the
// program writes one, bin_path not empty) its table does not fit gpt2_tokenizer.bin: checked before any
// output is written.
inline void prepro_load_tokenizer(Tokenizer* tok, const std::string& encoder_path,
                                  const std::string& bpe_path, const std::string& bin_path) {
    tokenizer_load(tok, encoder_path.c_str(), bpe_path.c_str());
    // Ids are 0..V-1 (tokenizer_load checks), so V <= 65536 makes every token fit the uint16 shards.
    if (tok->tokens.size() > 65536) {
        fail("'%s' has %zu tokens: ids above 65535 do not fit the uint16 token shards", encoder_path.c_str(),
             tok->tokens.size());
    }
    if (!bin_path.empty()) tokenizer_check_bin_format(tok, bin_path.c_str());
}

// Appends one document to tokens: <|endoftext|>, then text[begin, end) encoded as ordinary text.
inline void prepro_append_document(Tokenizer* tok, const std::string& text, size_t begin, size_t end,
                                   std::vector<int>* tokens) {
    tokens->push_back(tok->eot_token);
    tokenizer_encode_ordinary(tok, (const unsigned char*)text.data() + begin, end - begin, tokens);
}
