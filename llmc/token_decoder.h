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
// the vocab, a zero-length token, a truncated file, or bytes after the last token.
inline void token_decoder_load(TokenDecoder* d, const char* path) {
    File f(path, "rb");
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
    d->vocab_size = header[2];
    d->eot_token = header[1] == 2 ? header[3] : 50256;
    if (d->eot_token < 0 || d->eot_token >= d->vocab_size) {
        fail("'%s': EOT token %d is outside the vocab of %d tokens", path, d->eot_token, d->vocab_size);
    }
    d->tokens.assign(d->vocab_size, std::string());
    for (int id = 0; id < d->vocab_size; id++) {
        unsigned char len;
        f.read(&len, 1, 1, "a token length");
        if (len == 0) fail("'%s': token %d has length 0", path, id);
        d->tokens[id].resize(len);
        f.read(&d->tokens[id][0], 1, len, "a token's bytes");
    }
    if (fgetc(f.fp) != EOF) fail("'%s': unexpected bytes after the last of %d tokens", path, d->vocab_size);
}

// The raw bytes of token id (not necessarily whole UTF-8 characters); fails on an id outside the vocab.
inline const std::string& token_decoder_piece(const TokenDecoder* d, int id) {
    if (id < 0 || id >= d->vocab_size) {
        fail("token id %d is out of range: the tokenizer has ids 0..%d", id, d->vocab_size - 1);
    }
    return d->tokens[id];
}
