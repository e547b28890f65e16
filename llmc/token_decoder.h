// token_decoder.h: a decode-only reader of llm.c's gpt2_tokenizer.bin, which is all the trainers need to
// print samples: token id -> its raw bytes. No BPE encoder, no Unicode tables (those are llmc/tokenizer.h,
// for the data tools, which includes this header and writes the file with tokenizer_write_bin).
//
// gpt2_tokenizer.bin: int32 header[256] = {20240328 magic, version, vocab size, EOT id (version 2), 0...},
// then every token in id order as a 1-byte length (1..255) followed by its bytes.
//
// Interface: TokenDecoder, token_decoder_load, token_decoder_piece.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "llmc/utils.h"

inline constexpr int kTokenizerBinMagic = 20240328;

struct TokenDecoder {
    int vocab_size = 0;
    int eot_token = -1;
    std::vector<std::string> tokens; // id -> raw bytes
};

// Reads gpt2_tokenizer.bin, version 2 (header[3] is the EOT id) or llm.c's older version 1 (no EOT field;
// GPT-2's 50256 is assumed). Fails naming the file on a bad magic, version or vocab size, an EOT id outside
// the vocab, a zero-length token, a length that points past the end, or bytes after the last token. The
// vocab size is checked against the file's size before anything is allocated: every token takes 2..256
// bytes, so a 1 KB file cannot claim 2^24 tokens.
inline void token_decoder_load(TokenDecoder* d, const char* path) {
    File f(path, "rb");
    const size_t file_bytes = file_size_check(path);
    int32_t header[256];
    f.read(header, sizeof(int32_t), 256, "the 256-int32 header");
    if (header[0] != kTokenizerBinMagic) {
        fail("'%s' is not a gpt2_tokenizer.bin: magic number %d, expected %d", path, header[0],
             kTokenizerBinMagic);
    }
    if (header[1] != 1 && header[1] != 2)
        fail("'%s': unsupported version %d, expected 1 or 2", path, header[1]);
    if (header[2] <= 0 || header[2] > (1 << 24)) {
        fail("'%s': vocab size %d is not in 1..%d", path, header[2], 1 << 24);
    }
    const int V = header[2];
    const size_t table_bytes = file_bytes - sizeof(header); // the header was read, so file_bytes >= 1024
    if (table_bytes < 2 * (size_t)V) {
        fail("'%s' is truncated: a vocab of %d tokens needs at least %zu bytes after the header (1 length "
             "byte and at least 1 byte per token), the file has %zu",
             path, V, 2 * (size_t)V, table_bytes);
    }
    if (table_bytes > 256 * (size_t)V) {
        fail("'%s': unexpected bytes after the last of %d tokens: the file has %zu bytes after the header, "
             "more than the %zu that %d tokens of at most 255 bytes take",
             path, V, table_bytes, 256 * (size_t)V, V);
    }
    d->vocab_size = V;
    d->eot_token = header[1] == 2 ? header[3] : 50256;
    if (d->eot_token < 0 || d->eot_token >= V) {
        fail("'%s': EOT token %d is outside the vocab of %d tokens", path, d->eot_token, V);
    }
    // the token table, bounded above, read at once and walked with every length checked against its end
    std::string table(table_bytes, '\0');
    f.read(&table[0], 1, table_bytes, "the token table");
    d->tokens.assign(V, std::string());
    size_t pos = 0;
    for (int id = 0; id < V; id++) {
        if (pos >= table_bytes) {
            fail("'%s' is truncated: the table ends after %d of %d tokens", path, id, V);
        }
        size_t len = (unsigned char)table[pos++];
        if (len == 0) fail("'%s': token %d has length 0", path, id);
        if (len > table_bytes - pos) {
            fail("'%s' is truncated: token %d has length %zu, but only %zu bytes are left in the file", path,
                 id, len, table_bytes - pos);
        }
        d->tokens[id].assign(table, pos, len);
        pos += len;
    }
    if (pos != table_bytes) {
        fail("'%s': unexpected bytes after the last of %d tokens: %zu more", path, V, table_bytes - pos);
    }
}

// The raw bytes of token id (not necessarily whole UTF-8 characters); fails on an id outside the vocab.
inline const std::string& token_decoder_piece(const TokenDecoder* d, int id) {
    if (id < 0 || id >= d->vocab_size) {
        fail("token id %d is out of range: the tokenizer has ids 0..%d", id, d->vocab_size - 1);
    }
    return d->tokens[id];
}
