// rendezvous_peer: one process of a rendezvous (llmc/rendezvous.h), driven by tests/dist/test_rendezvous.sh,
// which starts several of them (in various orders, some missing or misconfigured) and checks the outcome.
//
//   build/tests/rendezvous_peer tcp|fs RANK NUM_RANKS SERVER|DIR SEED
//
// Rank 0 offers a 128-byte blob (the size of an ncclUniqueId) drawn from SEED; every other rank draws the
// same blob itself, receives rank 0's through the rendezvous and compares the two byte for byte. Exit 0
// when they match.
#include <cstdio>
#include <random>
#include <string>

#include "llmc/rendezvous.h"

int main(int argc, char** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s tcp|fs RANK NUM_RANKS SERVER|DIR SEED\n", argv[0]);
        return 1;
    }
    std::string method = argv[1];
    int rank = (int)parse_long_flag("RANK", argv[2]);
    int num_ranks = (int)parse_long_flag("NUM_RANKS", argv[3]);
    unsigned seed = (unsigned)parse_long_flag("SEED", argv[5]);
    unsigned char expected[128], blob[128];
    std::mt19937 rng(seed);
    for (unsigned char& b : expected) b = (unsigned char)(rng() & 0xff);
    for (unsigned char& b : blob) b = rank == 0 ? 0 : 0xAA; // only rank 0 starts with the blob
    if (rank == 0) memcpy(blob, expected, sizeof(blob));
    if (method == "tcp") {
        rendezvous_tcp(blob, sizeof(blob), rank, num_ranks, argv[4]);
    } else if (method == "fs") {
        rendezvous_fs(blob, sizeof(blob), rank, num_ranks, argv[4]);
    } else {
        fail("unknown method '%s' (tcp or fs)", method.c_str());
    }
    if (memcmp(blob, expected, sizeof(blob)) != 0) {
        printf("FAIL rank %d of %d (%s): the id differs from rank 0's (seed %u)\n", rank, num_ranks,
               method.c_str(), seed);
        return 1;
    }
    printf("rank %d of %d (%s): has rank 0's 128-byte id\n", rank, num_ranks, method.c_str());
    return 0;
}
