// test_dataloader.cpp: checks llmc/dataloader.h on synthetic token shards written to a temp directory.
//
// Every token encodes where it lives: token i of shard k has the value k*10000 + i (shards have fewer
// than 10000 tokens, vocab_size is 65536). So from a batch alone we can tell which shard and which
// sample it came from and check that it is the right contiguous slice, without trusting the loader.
//
// Checks: the unshuffled order; shuffling (every sample of every shard exactly once per epoch,
// different orders across epochs and seeds, identical order for the same seed); that N ranks with B
// rows reproduce one rank with N*B rows (N = 2, 4, with and without shuffling); get_state/set_state
// mid-shard, at a shard boundary and across an epoch boundary; reset; and every error case (a forked
// child must exit non-zero with a message naming the file and the expectation).
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "llmc/dataloader.h"
#include "tests/common/test_common.h"

// ----------------------------------------------------------------------------------------------------
// writing shards

static void write_shard_raw(const std::string& path, int32_t magic, int32_t version, int32_t count,
                            const std::vector<uint16_t>& toks) {
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    File f(path.c_str(), "wb");
    f.write(header, sizeof(int32_t), 256);
    if (!toks.empty()) f.write(toks.data(), sizeof(uint16_t), toks.size());
}

// A valid shard whose tokens encode (shard id, position).
static void write_position_shard(const std::string& path, int shard_id, size_t n) {
    std::vector<uint16_t> toks(n);
    for (size_t i = 0; i < n; i++) toks[i] = (uint16_t)(shard_id * 10000 + i);
    write_shard_raw(path, 20240520, 1, (int32_t)n, toks);
}

// ----------------------------------------------------------------------------------------------------
// decoding batches

struct BatchId {
    int shard;
    size_t sample;
    bool operator<(const BatchId& o) const { return shard != o.shard ? shard < o.shard : sample < o.sample; }
    bool operator==(const BatchId& o) const { return shard == o.shard && sample == o.sample; }
};

// Which (shard, sample) a rank's batch is, checking it is the contiguous slice the layout promises:
// inputs[i] = first + i and targets[i] = inputs[i] + 1, with first at offset s*P*B*T + r*B*T.
static BatchId decode_batch(const DataLoader* dl) {
    size_t BT = dl->B * dl->T, PBT = (size_t)dl->num_ranks * BT;
    int first = dl->inputs[0];
    bool contiguous = true;
    for (size_t i = 0; i < BT; i++) {
        if (dl->inputs[i] != first + (int)i || dl->targets[i] != first + (int)i + 1) contiguous = false;
    }
    CHECK(contiguous, "batch starting at token value %d is not a contiguous slice with next-token targets",
          first);
    BatchId id{first / 10000, (size_t)(first % 10000) / PBT};
    size_t offset = (size_t)(first % 10000);
    CHECK(offset == id.sample * PBT + (size_t)dl->rank * BT,
          "batch offset %zu is not sample*P*B*T + rank*B*T for rank %d", offset, dl->rank);
    return id;
}

static std::vector<BatchId> collect(DataLoader* dl, size_t nbatches) {
    std::vector<BatchId> ids;
    for (size_t b = 0; b < nbatches; b++) {
        dataloader_next_batch(dl);
        ids.push_back(decode_batch(dl));
    }
    return ids;
}

// ----------------------------------------------------------------------------------------------------
// running a case that must fail, in a child process

// ----------------------------------------------------------------------------------------------------

int main() {
    char tmpl[] = "/tmp/test_dataloader_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) fail("mkdtemp failed");
    std::string dir = tmpl;
    std::vector<std::string> created;
    auto path_of = [&](const char* name) {
        std::string p = dir + "/" + name;
        created.push_back(p);
        return p;
    };

    // Three shards of different sizes (listed out of order on purpose: the loader must sort names).
    const size_t shard_sizes[3] = {1000, 700, 1301};
    write_position_shard(path_of("train_002.bin"), 2, shard_sizes[2]);
    write_position_shard(path_of("train_000.bin"), 0, shard_sizes[0]);
    write_position_shard(path_of("train_001.bin"), 1, shard_sizes[1]);
    std::string pattern = dir + "/train_*.bin";
    const size_t B = 2, T = 8;
    const int V = 65536;

    // --- unshuffled order --------------------------------------------------------------------------
    printf("unshuffled: shards in name order, samples in order, then epoch 1 starts over\n");
    {
        DataLoader dl;
        dataloader_init(&dl, pattern.c_str(), B, T, 0, 1, false, 0, V);
        size_t expect_batches = 0, expect_tokens = 0;
        for (size_t n : shard_sizes) {
            expect_batches += (n - 1) / (B * T);
            expect_tokens += n;
        }
        CHECK(dataloader_num_batches(&dl) == expect_batches, "num_batches %zu, expected %zu",
              dataloader_num_batches(&dl), expect_batches);
        CHECK(dl.num_tokens_total == expect_tokens, "num_tokens_total %zu, expected %zu", dl.num_tokens_total,
              expect_tokens);
        std::vector<BatchId> ids = collect(&dl, expect_batches);
        size_t b = 0;
        bool in_order = true;
        for (int k = 0; k < 3; k++) {
            for (size_t s = 0; s < (shard_sizes[k] - 1) / (B * T); s++, b++) {
                if (!(ids[b] == BatchId{k, s})) in_order = false;
            }
        }
        CHECK(in_order, "unshuffled batches are not shard 0..2, sample 0..n-1 in order");
        CHECK(dl.epoch == 0, "epoch advanced early: %llu", (unsigned long long)dl.epoch);
        std::vector<BatchId> next = collect(&dl, 2);
        CHECK(next[0] == (BatchId{0, 0}) && next[1] == (BatchId{0, 1}),
              "epoch 1 does not restart at shard 0");
        CHECK(dl.epoch == 1, "epoch is %llu after one full pass, expected 1", (unsigned long long)dl.epoch);
    }

    // --- shuffled order ----------------------------------------------------------------------------
    printf("shuffled: each sample once per epoch; orders differ by epoch and seed; same seed, same order\n");
    {
        auto run_epochs = [&](uint64_t seed, int epochs) {
            DataLoader dl;
            dataloader_init(&dl, pattern.c_str(), B, T, 0, 1, true, seed, V);
            std::vector<std::vector<BatchId>> per_epoch;
            for (int e = 0; e < epochs; e++) per_epoch.push_back(collect(&dl, dataloader_num_batches(&dl)));
            return per_epoch;
        };
        std::set<BatchId> all;
        for (int k = 0; k < 3; k++) {
            for (size_t s = 0; s < (shard_sizes[k] - 1) / (B * T); s++) all.insert(BatchId{k, s});
        }
        std::vector<std::vector<BatchId>> a = run_epochs(1234, 3);
        for (size_t e = 0; e < a.size(); e++) {
            std::set<BatchId> seen(a[e].begin(), a[e].end());
            CHECK(seen.size() == a[e].size() && seen == all,
                  "epoch %zu: %zu distinct of %zu batches, %zu expected", e, seen.size(), a[e].size(),
                  all.size());
            // samples of one shard are read together (a shard is loaded once per epoch)
            int changes = 0;
            for (size_t i = 1; i < a[e].size(); i++) changes += a[e][i].shard != a[e][i - 1].shard;
            CHECK(changes == 2, "epoch %zu: shard changes %d times, expected 2", e, changes);
        }
        CHECK(a[0] != a[1] && a[1] != a[2], "shuffled order repeats across epochs");
        std::vector<BatchId> unshuffled;
        for (int k = 0; k < 3; k++) {
            for (size_t s = 0; s < (shard_sizes[k] - 1) / (B * T); s++) unshuffled.push_back(BatchId{k, s});
        }
        CHECK(a[0] != unshuffled, "shuffled order equals the unshuffled one");
        std::vector<std::vector<BatchId>> b = run_epochs(1234, 3);
        CHECK(a == b, "same seed gave a different order");
        std::vector<std::vector<BatchId>> c = run_epochs(1235, 1);
        CHECK(a[0] != c[0], "seeds 1234 and 1235 gave the same order");
        // shard order across epochs: over 12 epochs, more than one of the 3! orders must appear
        std::vector<std::vector<BatchId>> many = run_epochs(7, 12);
        std::set<std::vector<int>> shard_orders;
        for (const auto& ep : many) {
            std::vector<int> order{ep[0].shard};
            for (size_t i = 1; i < ep.size(); i++) {
                if (ep[i].shard != order.back()) order.push_back(ep[i].shard);
            }
            shard_orders.insert(order);
        }
        CHECK(shard_orders.size() > 1, "shard order never changes over 12 epochs");

        // Two shards of equal size must get different sample permutations (the shuffle of a shard is
        // drawn from (seed, epoch, shard), not from (seed, epoch) alone).
        write_position_shard(path_of("eq_000.bin"), 0, 801);
        write_position_shard(path_of("eq_001.bin"), 1, 801);
        std::string eq = dir + "/eq_*.bin";
        DataLoader dl;
        dataloader_init(&dl, eq.c_str(), B, T, 0, 1, true, 11, V);
        std::vector<BatchId> ep = collect(&dl, dataloader_num_batches(&dl));
        std::vector<size_t> order0, order1;
        for (const BatchId& id : ep) (id.shard == 0 ? order0 : order1).push_back(id.sample);
        CHECK(order0.size() == 50 && order1.size() == 50 && order0 != order1,
              "equal-size shards got the same sample permutation (or wrong counts %zu, %zu)", order0.size(),
              order1.size());
    }

    // --- N ranks with B rows == one rank with N*B rows ----------------------------------------------
    printf("ranks: N ranks x B rows concatenated == 1 rank x N*B rows (N = 2, 4; shuffled and not)\n");
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int N : {2, 4}) {
            DataLoader single;
            dataloader_init(&single, pattern.c_str(), N * B, T, 0, 1, shuffle, 99, V);
            std::vector<DataLoader> ranks(N);
            for (int r = 0; r < N; r++)
                dataloader_init(&ranks[r], pattern.c_str(), B, T, r, N, shuffle, 99, V);
            CHECK(dataloader_num_batches(&ranks[0]) == dataloader_num_batches(&single),
                  "N=%d: %zu batches per epoch per rank, single rank has %zu", N,
                  dataloader_num_batches(&ranks[0]), dataloader_num_batches(&single));
            size_t nb = dataloader_num_batches(&single) * 2 + 3; // into the third epoch
            bool same = true;
            for (size_t b = 0; b < nb; b++) {
                dataloader_next_batch(&single);
                std::vector<int> cat_in, cat_tg;
                for (int r = 0; r < N; r++) {
                    dataloader_next_batch(&ranks[r]);
                    decode_batch(&ranks[r]);
                    cat_in.insert(cat_in.end(), ranks[r].inputs.begin(), ranks[r].inputs.end());
                    cat_tg.insert(cat_tg.end(), ranks[r].targets.begin(), ranks[r].targets.end());
                }
                if (cat_in != single.inputs || cat_tg != single.targets) same = false;
            }
            CHECK(same, "shuffle=%d N=%d: concatenated rank batches differ from the single-rank batch",
                  shuffle, N);
        }
    }

    // --- N ranks x K micro-steps x B rows == one rank, one micro-step, N*K*B rows -----------------------
    printf("accumulation: N ranks x K micro-steps x B rows == 1 rank x 1 step x N*K*B rows\n");
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int N : {1, 2}) {
            for (int K : {2, 3}) {
                DataLoader single;
                dataloader_init(&single, pattern.c_str(), N * K * B, T, 0, 1, shuffle, 7, V);
                std::vector<DataLoader> ranks(N);
                for (int r = 0; r < N; r++)
                    dataloader_init(&ranks[r], pattern.c_str(), B, T, r, N, shuffle, 7, V, K);
                CHECK(dataloader_num_batches(&ranks[0]) == dataloader_num_batches(&single),
                      "N=%d K=%d: %zu steps per epoch, single rank has %zu", N, K,
                      dataloader_num_batches(&ranks[0]), dataloader_num_batches(&single));
                size_t nb = dataloader_num_batches(&single) * 2 + 1;
                bool same = true;
                for (size_t b = 0; b < nb; b++) {
                    dataloader_next_batch(&single);
                    // the big batch's rows in order: micro-step k of rank r holds rows (k*N + r)*B ...
                    std::vector<int> cat_in, cat_tg;
                    for (int k = 0; k < K; k++) {
                        for (int r = 0; r < N; r++) {
                            dataloader_next_batch(&ranks[r]);
                            cat_in.insert(cat_in.end(), ranks[r].inputs.begin(), ranks[r].inputs.end());
                            cat_tg.insert(cat_tg.end(), ranks[r].targets.begin(), ranks[r].targets.end());
                        }
                    }
                    if (cat_in != single.inputs || cat_tg != single.targets) same = false;
                }
                CHECK(same, "shuffle=%d N=%d K=%d: micro-batches differ from the one big batch", shuffle, N,
                      K);
                CHECK(ranks[0].micro_pos == 0, "micro position %d after whole steps", ranks[0].micro_pos);
            }
        }
    }

    // --- get_state / set_state ----------------------------------------------------------------------
    printf("state: resume mid-shard, at a shard boundary, across an epoch boundary, in a later epoch\n");
    {
        DataLoader probe;
        dataloader_init(&probe, pattern.c_str(), B, T, 0, 1, true, 5, V);
        size_t per_epoch = dataloader_num_batches(&probe);
        // the shard boundary: the number of samples of the first shard of epoch 0
        size_t first_shard_samples = probe.sample_order.size();
        const size_t stops[] = {7, first_shard_samples, per_epoch - 3, per_epoch, 2 * per_epoch + 11};
        for (size_t stop : stops) {
            DataLoader a;
            dataloader_init(&a, pattern.c_str(), B, T, 0, 1, true, 5, V);
            for (size_t i = 0; i < stop; i++) dataloader_next_batch(&a);
            DataLoaderState st = dataloader_get_state(&a);
            std::vector<std::vector<int>> want_in, want_tg;
            for (size_t i = 0; i < per_epoch + 5; i++) {
                dataloader_next_batch(&a);
                want_in.push_back(a.inputs);
                want_tg.push_back(a.targets);
            }
            DataLoader b; // a fresh loader, as after a restart; used for something else first
            dataloader_init(&b, pattern.c_str(), B, T, 0, 1, true, 5, V);
            for (int i = 0; i < 13; i++) dataloader_next_batch(&b);
            dataloader_set_state(&b, st);
            bool same = true;
            for (size_t i = 0; i < want_in.size(); i++) {
                dataloader_next_batch(&b);
                if (b.inputs != want_in[i] || b.targets != want_tg[i]) same = false;
            }
            CHECK(same,
                  "after %zu batches (epoch %llu shard_pos %llu sample_pos %llu) the resumed loader differs",
                  stop, (unsigned long long)st.epoch, (unsigned long long)st.shard_pos,
                  (unsigned long long)st.sample_pos);
        }
    }

    // --- reset --------------------------------------------------------------------------------------
    printf("reset: back to the first batch of epoch 0\n");
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        DataLoader fresh, used;
        dataloader_init(&fresh, pattern.c_str(), B, T, 0, 1, shuffle, 3, V);
        dataloader_init(&used, pattern.c_str(), B, T, 0, 1, shuffle, 3, V);
        for (size_t i = 0; i < dataloader_num_batches(&used) + 17; i++) dataloader_next_batch(&used);
        dataloader_reset(&used);
        std::vector<BatchId> a = collect(&fresh, 40), b = collect(&used, 40);
        CHECK(a == b && used.epoch == 0, "shuffle=%d: reset loader differs from a fresh one", shuffle);
    }

    // --- errors -------------------------------------------------------------------------------------
    printf("errors: each must exit non-zero naming the file and the expectation\n");
    {
        std::string nomatch = dir + "/nothing_*.bin";
        expect_failure("pattern that matches nothing",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, nomatch.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {nomatch, "matches nothing"});
        std::string missing = dir + "/missing.bin";
        expect_failure("missing file",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, missing.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {missing, "missing file"});

        std::string shortf = path_of("short.bin");
        {
            File f(shortf.c_str(), "wb");
            int32_t x[10] = {20240520, 1, 5};
            f.write(x, sizeof(int32_t), 10);
        }
        expect_failure("file shorter than the header",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, shortf.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {shortf, "40 bytes", "shorter than the 1024-byte header"});

        std::vector<uint16_t> toks(100, 7);
        std::string magic = path_of("badmagic.bin");
        write_shard_raw(magic, 12345, 1, 100, toks);
        expect_failure("bad magic",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, magic.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {magic, "expected magic 20240520, got 12345; is this a token shard?"});

        std::string version = path_of("badversion.bin");
        write_shard_raw(version, 20240520, 2, 100, toks);
        expect_failure("bad version",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, version.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {version, "expected version 1, got 2"});

        std::string size = path_of("badsize.bin");
        write_shard_raw(size, 20240520, 1, 99, toks); // 100 tokens on disk, header says 99
        expect_failure("file size != 1024 + 2*count",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, size.c_str(), B, T, 0, 1, false, 0, V);
                       },
                       {size, "header says 99 tokens (1222 bytes) but file has 1224 bytes"});

        std::string vocab = path_of("badtoken.bin");
        {
            std::vector<uint16_t> t(300, 11);
            t[123] = 50300;
            write_shard_raw(vocab, 20240520, 1, 300, t);
        }
        expect_failure("token >= vocab size (first shard, at init)",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, vocab.c_str(), B, T, 0, 1, false, 0, 50257);
                       },
                       {vocab, "token 50300 at position 123 is >= vocab size 50257"});

        // A bad token in the second shard is found when that shard becomes current.
        std::string two_a = path_of("two_a.bin"), two_b = path_of("two_b.bin");
        write_shard_raw(two_a, 20240520, 1, 100, toks);
        {
            std::vector<uint16_t> t(100, 11);
            t[42] = 60000;
            write_shard_raw(two_b, 20240520, 1, 100, t);
        }
        std::string two = dir + "/two_*.bin";
        ChildResult ok_init = run_child([&] {
            DataLoader dl;
            dataloader_init(&dl, two.c_str(), B, T, 0, 1, false, 0, 50257);
        });
        CHECK(ok_init.exit_code == 0,
              "init with a bad token only in the second shard should succeed (got %d: %s)", ok_init.exit_code,
              ok_init.err.c_str());
        expect_failure("token >= vocab size (second shard, on load)",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, two.c_str(), B, T, 0, 1, false, 0, 50257);
                           for (int i = 0; i < 100; i++) dataloader_next_batch(&dl);
                       },
                       {two_b, "token 60000 at position 42 is >= vocab size 50257"});

        std::string small = path_of("small.bin");
        write_shard_raw(small, 20240520, 1, 16, std::vector<uint16_t>(16, 1));
        expect_failure("shard too small for one global batch",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, small.c_str(), B, T, 0, 1, false, 0, V); // needs 2*8+1 = 17
                       },
                       {small, "has 16 tokens", "17 tokens"});
        // 17 tokens is exactly one global batch: must work, and give one batch per epoch
        std::string exact = path_of("exact.bin");
        write_position_shard(exact, 0, 17);
        {
            DataLoader dl;
            dataloader_init(&dl, exact.c_str(), B, T, 0, 1, false, 0, V);
            CHECK(dataloader_num_batches(&dl) == 1,
                  "a 17-token shard with B*T=16 has %zu batches, expected 1", dataloader_num_batches(&dl));
            std::vector<BatchId> ids = collect(&dl, 3);
            CHECK(ids[0] == (BatchId{0, 0}) && ids[2] == (BatchId{0, 0}) && dl.epoch == 2,
                  "a one-batch shard does not repeat every epoch");
        }
        expect_failure("set_state with a shard position out of range",
                       [&] {
                           DataLoader dl;
                           dataloader_init(&dl, pattern.c_str(), B, T, 0, 1, false, 0, V);
                           dataloader_set_state(&dl, DataLoaderState{0, 3, 0});
                       },
                       {"shard position 3", "only 3 shards"});
    }

    for (const std::string& p : created) remove(p.c_str());
    rmdir(dir.c_str());
    return test_summary("test_dataloader");
}
