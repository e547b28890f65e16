// crc32.h: CRC-32, the checksum of the payload of model and state files.
//
// A CRC detects every burst error up to 32 bits and any random corruption with probability 1 - 2^-32,
// which is what a checkpoint needs (a flipped bit, a block of zeros, a truncated-then-extended file); it is
// not a defence against someone forging a file. The polynomial is IEEE 802.3's (reflected 0xEDB88320), the
// one zlib, gzip and PNG use, so any tool checks the figures: in Python, zlib.crc32(payload) (the tests do).
//
// Slicing-by-8: eight 256-entry tables let the loop consume 8 bytes per step with 8 table lookups instead
// of one lookup per byte (about 1-2 GB/s on one core: a d12 fp32 checkpoint, 0.5 GB, costs ~0.3 s).
// Table k maps a byte to its CRC contribution when followed by k zero bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

struct Crc32Tables {
    uint32_t t[8][256];
    Crc32Tables() {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
            t[0][i] = c;
        }
        for (int k = 1; k < 8; k++)
            for (int i = 0; i < 256; i++) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    }
};
inline const Crc32Tables& crc32_tables() {
    static const Crc32Tables tables;
    return tables;
}

// Extends crc (the value returned for the bytes before; 0 to start) over n more bytes: crc32(a + b) =
// crc32_update(crc32_update(0, a), b), so a file can be checksummed in pieces as it streams.
inline uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
    const uint32_t(*t)[256] = crc32_tables().t;
    const unsigned char* p = (const unsigned char*)data;
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) { // little-endian word order, as the x86 and ARM machines we run on
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    }
    for (; n > 0; n--, p++) crc = (crc >> 8) ^ t[0][(crc ^ *p) & 0xff];
    return ~crc;
}
