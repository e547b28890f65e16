// rendezvous.h: hand a small blob from rank 0 to every other process without MPI: the bootstrap of
// llmc/nccl_gpu.cuh for jobs started one command per node (the blob is the 128-byte ncclUniqueId).
// Plain C++ and POSIX (sockets, files), so it is tested on a CPU-only machine
// (tests/dist/test_rendezvous.sh).
//
// Both methods have one deadline (LLMC_RENDEZVOUS_TIMEOUT_S seconds, default 300): a process that never
// shows up gives every waiting process a clear error naming what is missing, never a hang.
//
// TCP ("-pi tcp -ps host[:port]", port 12345 by default): rank 0 listens on every interface at the port;
// every other rank connects to host:port (retrying while rank 0 is not up yet) and sends a hello
// {magic, rank, num_ranks, blob size}; once all num_ranks-1 hellos are in, and none is duplicated or
// disagrees on num_ranks, rank 0 sends the blob on each connection.
//
// Shared file system ("-pi fs -pf dir", dir visible to every node): the blob alone would not be safe, as
// a file left by an earlier run could be read before rank 0 replaces it and hand out a stale id. So each
// rank r > 0 writes dir/ncclUniqueId.hello.<r> holding a fresh random token (and writes it again if it
// disappears); rank 0 first deletes what an earlier run left, then waits for every hello and writes
// dir/ncclUniqueId.bin = {magic, num_ranks, blob size, the tokens of ranks 1..N-1, blob} atomically
// (temporary file + rename). A rank accepts the id file only when it carries its own token, which no
// earlier run's file can.
#pragma once

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "llmc/utils.h"

constexpr int RENDEZVOUS_DEFAULT_PORT = 12345;
constexpr uint32_t RENDEZVOUS_MAGIC = 0x434d4c4c; // "LLMC" in little-endian bytes

inline double rendezvous_now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The deadline for either method, from LLMC_RENDEZVOUS_TIMEOUT_S (seconds) or 300.
inline double rendezvous_timeout_s() {
    const char* text = getenv("LLMC_RENDEZVOUS_TIMEOUT_S");
    if (text == nullptr) return 300.0;
    double timeout = parse_float_flag("LLMC_RENDEZVOUS_TIMEOUT_S", text);
    if (!(timeout > 0.0))
        fail("LLMC_RENDEZVOUS_TIMEOUT_S must be a positive number of seconds, got '%s'", text);
    return timeout;
}

inline int rendezvous_ms_left(double deadline) {
    double left = deadline - rendezvous_now_s();
    return left <= 0.0 ? 0 : (int)(left * 1000.0) + 1;
}

inline void rendezvous_check_args(int rank, int num_ranks, size_t bytes) {
    if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
        fail("rendezvous: process rank %d of %d is not valid (flags -pr and -pn)", rank, num_ranks);
    }
    if (bytes == 0 || bytes > 65536) fail("rendezvous: a blob of %zu bytes is not supported", bytes);
}

// The ranks in 1..num_ranks-1 for which seen[r] is false, as text ("2, 5") for error messages.
inline std::string rendezvous_missing(const std::vector<bool>& seen) {
    std::string text;
    for (size_t r = 1; r < seen.size(); r++) {
        if (!seen[r]) text += (text.empty() ? "" : ", ") + std::to_string(r);
    }
    return text;
}

// ----------------------------------------------------------------------------------------------------
// TCP

struct RendezvousHello {
    uint32_t magic;
    int32_t rank, num_ranks, bytes;
};

// "host" or "host:port" (IPv4 address or host name)
inline void rendezvous_parse_server(const char* server, std::string* host, int* port) {
    if (server == nullptr || server[0] == '\0')
        fail("rendezvous over tcp needs the address of rank 0 (flag -ps)");
    std::string text(server);
    size_t colon = text.rfind(':');
    *port = RENDEZVOUS_DEFAULT_PORT;
    *host = text;
    if (colon != std::string::npos) {
        *host = text.substr(0, colon);
        long p = parse_long_flag("-ps (port after ':')", text.c_str() + colon + 1);
        if (p < 1 || p > 65535) fail("flag -ps: port %ld is not in 1..65535 (in '%s')", p, server);
        *port = (int)p;
    }
    if (host->empty()) fail("flag -ps: no host in '%s'", server);
}

// Receive exactly n bytes before the deadline; false on timeout, end of stream or error (errno_out set).
inline bool rendezvous_recv_all(int fd, void* buf, size_t n, double deadline, int* errno_out) {
    char* p = (char*)buf;
    while (n > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int ms = rendezvous_ms_left(deadline);
        if (ms == 0) {
            *errno_out = ETIMEDOUT;
            return false;
        }
        int ready = poll(&pfd, 1, ms);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) {
            *errno_out = errno;
            return false;
        }
        if (ready == 0) continue; // the loop re-checks the deadline
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            *errno_out = got == 0 ? ECONNRESET : errno;
            return false;
        }
        p += got;
        n -= (size_t)got;
    }
    return true;
}

// Send exactly n bytes (MSG_NOSIGNAL: a peer that went away gives an error, not a SIGPIPE).
inline bool rendezvous_send_all(int fd, const void* buf, size_t n) {
    const char* p = (const char*)buf;
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return false;
        p += sent;
        n -= (size_t)sent;
    }
    return true;
}

// Rank 0: accept num_ranks-1 peers, then send them the blob.
inline void rendezvous_tcp_serve(const void* blob, size_t bytes, int num_ranks, int port, double deadline,
                                 double timeout) {
    int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0) fail("rendezvous: rank 0 could not create a socket: %s", strerror(errno));
    int one = 1;
    if (setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
        fail("rendezvous: rank 0 setsockopt(SO_REUSEADDR) failed: %s", strerror(errno));
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((uint16_t)port);
    if (bind(listen_fd, (struct sockaddr*)&addr, sizeof(addr)) != 0) {
        fail("rendezvous: rank 0 could not listen on port %d: %s (another job on this port? choose one with "
             "-ps host:port)",
             port, strerror(errno));
    }
    if (listen(listen_fd, num_ranks) != 0) fail("rendezvous: rank 0 listen() failed: %s", strerror(errno));

    std::vector<int> peer_fd(num_ranks, -1);
    std::vector<bool> seen(num_ranks, false);
    int joined = 0;
    while (joined < num_ranks - 1) {
        int ms = rendezvous_ms_left(deadline);
        if (ms == 0) {
            fail("rendezvous: rank 0 waited %g s on port %d but process rank(s) %s of %d never connected "
                 "(are they started, with -ps pointing at this node?)",
                 timeout, port, rendezvous_missing(seen).c_str(), num_ranks);
        }
        struct pollfd pfd = {listen_fd, POLLIN, 0};
        int ready = poll(&pfd, 1, ms);
        if (ready < 0 && errno != EINTR) fail("rendezvous: rank 0 poll() failed: %s", strerror(errno));
        if (ready <= 0) continue;
        int fd = accept(listen_fd, nullptr, nullptr);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fail("rendezvous: rank 0 accept() failed: %s", strerror(errno));
        }
        // a stray connection that sends nothing may hold us at most 10 s
        RendezvousHello hello;
        int err = 0;
        double hello_deadline = std::min(deadline, rendezvous_now_s() + 10.0);
        if (!rendezvous_recv_all(fd, &hello, sizeof(hello), hello_deadline, &err) ||
            hello.magic != RENDEZVOUS_MAGIC) {
            fprintf(stderr,
                    "warning: rendezvous: rank 0 ignored a connection on port %d that is not a peer (%s)\n",
                    port, err != 0 ? strerror(err) : "wrong greeting");
            close(fd);
            continue;
        }
        if (hello.num_ranks != num_ranks) {
            fail("rendezvous: process rank %d was started with -pn %d, rank 0 with -pn %d", hello.rank,
                 hello.num_ranks, num_ranks);
        }
        if (hello.bytes != (int32_t)bytes) {
            fail("rendezvous: process rank %d expects a %d-byte id, rank 0 has %zu bytes (different builds?)",
                 hello.rank, hello.bytes, bytes);
        }
        if (hello.rank < 1 || hello.rank >= num_ranks) {
            fail("rendezvous: a process connected as rank %d, which is not in 1..%d (flag -pr)", hello.rank,
                 num_ranks - 1);
        }
        if (seen[hello.rank]) {
            fail("rendezvous: two processes connected as rank %d (check their -pr flags)", hello.rank);
        }
        seen[hello.rank] = true;
        peer_fd[hello.rank] = fd;
        joined++;
    }
    for (int r = 1; r < num_ranks; r++) {
        if (!rendezvous_send_all(peer_fd[r], blob, bytes)) {
            fail("rendezvous: rank 0 could not send the id to rank %d: %s", r, strerror(errno));
        }
        close(peer_fd[r]);
    }
    close(listen_fd);
}

// Connect to host:port before the deadline, retrying while rank 0 is not listening yet; returns the socket.
inline int rendezvous_tcp_connect(const std::string& host, int port, int rank, double deadline,
                                  double timeout) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* addrs = nullptr;
    std::string port_text = std::to_string(port);
    int gai = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &addrs);
    if (gai != 0)
        fail("rendezvous: process rank %d could not resolve '%s' (flag -ps): %s", rank, host.c_str(),
             gai_strerror(gai));
    std::string last_error = "no attempt";
    while (true) {
        int fd = socket(addrs->ai_family, addrs->ai_socktype, addrs->ai_protocol);
        if (fd < 0) fail("rendezvous: process rank %d could not create a socket: %s", rank, strerror(errno));
        // non-blocking connect, so an unreachable host costs at most the time left, not the kernel's minutes
        int flags = fcntl(fd, F_GETFL, 0);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
            fail("rendezvous: process rank %d fcntl() failed: %s", rank, strerror(errno));
        }
        int err = 0;
        if (connect(fd, addrs->ai_addr, addrs->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd pfd = {fd, POLLOUT, 0};
                int ms = std::min(rendezvous_ms_left(deadline), 2000);
                int ready = poll(&pfd, 1, ms);
                socklen_t len = sizeof(err);
                if (ready > 0) {
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
                } else {
                    err = ready == 0 ? ETIMEDOUT : errno;
                }
            }
        }
        if (err == 0) {
            if (fcntl(fd, F_SETFL, flags) < 0) fail("rendezvous: fcntl() failed: %s", strerror(errno));
            freeaddrinfo(addrs);
            return fd;
        }
        close(fd);
        last_error = strerror(err);
        if (rendezvous_ms_left(deadline) == 0) {
            fail("rendezvous: process rank %d could not reach rank 0 at %s:%d within %g s (last error: %s); "
                 "is rank 0 running, and is -ps its address?",
                 rank, host.c_str(), port, timeout, last_error.c_str());
        }
        usleep(200 * 1000);
    }
}

// blob (bytes): in on rank 0, out on every other rank. server: "host[:port]" of rank 0.
inline void rendezvous_tcp(void* blob, size_t bytes, int rank, int num_ranks, const char* server) {
    rendezvous_check_args(rank, num_ranks, bytes);
    if (num_ranks == 1) return;
    std::string host;
    int port = 0;
    rendezvous_parse_server(server, &host, &port);
    double timeout = rendezvous_timeout_s();
    double deadline = rendezvous_now_s() + timeout;
    if (rank == 0) {
        rendezvous_tcp_serve(blob, bytes, num_ranks, port, deadline, timeout);
        return;
    }
    int fd = rendezvous_tcp_connect(host, port, rank, deadline, timeout);
    RendezvousHello hello = {RENDEZVOUS_MAGIC, rank, num_ranks, (int32_t)bytes};
    if (!rendezvous_send_all(fd, &hello, sizeof(hello))) {
        fail("rendezvous: process rank %d could not greet rank 0 at %s:%d: %s", rank, host.c_str(), port,
             strerror(errno));
    }
    int err = 0;
    if (!rendezvous_recv_all(fd, blob, bytes, deadline, &err)) {
        if (err == ETIMEDOUT) {
            fail("rendezvous: process rank %d waited %g s for rank 0 to send the id (some other process "
                 "never joined? see rank 0's message)",
                 rank, timeout);
        }
        fail("rendezvous: process rank %d: rank 0 closed the connection without sending the id (%s; see rank "
             "0's error message)",
             rank, strerror(err));
    }
    close(fd);
}

// ----------------------------------------------------------------------------------------------------
// shared file system

inline std::string rendezvous_id_path(const char* dir) {
    return std::string(dir) + "/ncclUniqueId.bin";
}
inline std::string rendezvous_hello_path(const char* dir, int rank) {
    return std::string(dir) + "/ncclUniqueId.hello." + std::to_string(rank);
}

struct RendezvousFileHello {
    uint32_t magic;
    int32_t rank, num_ranks, bytes;
    uint64_t token;
};

// Read a whole small file written by AtomicFile; false if it is absent (or vanished meanwhile) or is not
// exactly n bytes. No fail(): another process may be replacing or deleting it.
inline bool rendezvous_read_file(const std::string& path, void* buf, size_t n) {
    FILE* fp = fopen(path.c_str(), "rb");
    if (fp == nullptr) return false;
    size_t got = fread(buf, 1, n, fp);
    char extra;
    bool exact = got == n && fread(&extra, 1, 1, fp) == 0;
    fclose(fp);
    return exact;
}

inline void rendezvous_write_file(const std::string& path, const void* buf, size_t n) {
    AtomicFile file(path.c_str());
    file.write(buf, 1, n);
    file.commit();
}

// blob (bytes): in on rank 0, out on every other rank. dir: a directory every process can read and write.
inline void rendezvous_fs(void* blob, size_t bytes, int rank, int num_ranks, const char* dir) {
    rendezvous_check_args(rank, num_ranks, bytes);
    if (num_ranks == 1) return;
    if (dir == nullptr || dir[0] == '\0') fail("rendezvous over a file system needs a directory (flag -pf)");
    struct stat st;
    if (stat(dir, &st) != 0)
        fail("rendezvous: cannot use directory '%s' (flag -pf): %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) fail("rendezvous: '%s' (flag -pf) is not a directory", dir);
    double timeout = rendezvous_timeout_s();
    double deadline = rendezvous_now_s() + timeout;
    std::string id_path = rendezvous_id_path(dir);
    // id file: header (4 x uint32), the tokens of ranks 0..N-1 (uint64, slot 0 unused), blob
    size_t header_bytes = 4 * sizeof(uint32_t), tokens_bytes = (size_t)num_ranks * sizeof(uint64_t);
    size_t id_file_bytes = header_bytes + tokens_bytes + bytes;
    std::vector<char> id_file(id_file_bytes, 0);
    uint32_t header[4] = {RENDEZVOUS_MAGIC, (uint32_t)num_ranks, (uint32_t)bytes, 0};
    std::vector<uint64_t> tokens(num_ranks, 0);

    if (rank == 0) {
        // an earlier run's id file could not mislead anyone (it lacks this run's tokens), but its hello
        // files could: their stale tokens would go into the id file and the ranks they stand for would
        // wait for their deadline. A rank whose fresh hello is deleted here writes it again (below).
        remove(id_path.c_str());
        for (int r = 1; r < num_ranks; r++) remove(rendezvous_hello_path(dir, r).c_str());
        std::vector<bool> seen(num_ranks, false);
        int joined = 0;
        while (joined < num_ranks - 1) {
            for (int r = 1; r < num_ranks; r++) {
                RendezvousFileHello hello;
                if (seen[r] || !rendezvous_read_file(rendezvous_hello_path(dir, r), &hello, sizeof(hello)))
                    continue;
                if (hello.magic != RENDEZVOUS_MAGIC || hello.rank != r) continue;
                if (hello.num_ranks != num_ranks) {
                    fail("rendezvous: process rank %d was started with -pn %d, rank 0 with -pn %d", r,
                         hello.num_ranks, num_ranks);
                }
                if (hello.bytes != (int32_t)bytes) {
                    fail("rendezvous: process rank %d expects a %d-byte id, rank 0 has %zu bytes", r,
                         hello.bytes, bytes);
                }
                tokens[r] = hello.token;
                seen[r] = true;
                joined++;
            }
            if (joined == num_ranks - 1) break;
            if (rendezvous_ms_left(deadline) == 0) {
                fail("rendezvous: rank 0 waited %g s in '%s' but process rank(s) %s of %d never checked in "
                     "(are they started, with the same -pf on a shared file system?)",
                     timeout, dir, rendezvous_missing(seen).c_str(), num_ranks);
            }
            usleep(50 * 1000);
        }
        memcpy(id_file.data(), header, header_bytes);
        memcpy(id_file.data() + header_bytes, tokens.data(), tokens_bytes);
        memcpy(id_file.data() + header_bytes + tokens_bytes, blob, bytes);
        rendezvous_write_file(id_path, id_file.data(), id_file_bytes);
        return;
    }

    std::random_device device;
    uint64_t token = ((uint64_t)device() << 32) ^ (uint64_t)device() ^ (uint64_t)getpid() ^
                     (uint64_t)std::chrono::system_clock::now().time_since_epoch().count();
    RendezvousFileHello hello = {RENDEZVOUS_MAGIC, rank, num_ranks, (int32_t)bytes, token};
    std::string hello_path = rendezvous_hello_path(dir, rank);
    rendezvous_write_file(hello_path, &hello, sizeof(hello));
    while (true) {
        if (rendezvous_read_file(id_path, id_file.data(), id_file_bytes)) {
            uint32_t got[4];
            memcpy(got, id_file.data(), header_bytes);
            memcpy(tokens.data(), id_file.data() + header_bytes, tokens_bytes);
            if (memcmp(got, header, header_bytes) == 0 && tokens[rank] == token) {
                memcpy(blob, id_file.data() + header_bytes + tokens_bytes, bytes);
                remove(hello_path.c_str());
                return;
            }
        }
        if (rendezvous_ms_left(deadline) == 0) {
            fail("rendezvous: process rank %d waited %g s for rank 0 to write '%s' with this process's token "
                 "(is rank 0 running with -pf on the same shared directory, the same -pn, and no other "
                 "process using -pr %d?)",
                 rank, timeout, id_path.c_str(), rank);
        }
        // rank 0 deletes the hello files of earlier runs when it starts: put ours back if it went
        if (!file_exists(hello_path.c_str())) rendezvous_write_file(hello_path, &hello, sizeof(hello));
        usleep(50 * 1000);
    }
}
