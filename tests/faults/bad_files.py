"""Makes the bad model and state files of tests/faults/test_bad_input.sh from a good checkpoint directory.
Checksums are recomputed with zlib.crc32 (the IEEE CRC-32 the trainers use, computed independently of them)
where a case must get past the checksum to the check it is about.
usage: bad_files.py <checkpoint dir> <step> <out dir>"""
import os
import struct
import sys
import zlib

src, step, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = bytearray(open(os.path.join(src, f"model_{step:08d}.bin"), "rb").read())
state = bytearray(open(os.path.join(src, f"state_{step:08d}_00000.bin"), "rb").read())
H = 1024


def write(name, data):
    open(os.path.join(out, name), "wb").write(data)


def check(cond, what):
    if not cond:
        sys.exit(f"bad_files.py: {what}")


# the trainers' checksums are zlib's CRC-32 of the payload: an independent check of the writer
hm = struct.unpack_from("<256i", model)
check(hm[8] == 0x43524343 and (hm[9] & 0xFFFFFFFF) == zlib.crc32(model[H:]), "model checksum != zlib.crc32")
hs = struct.unpack_from("<256i", state)
check((hs[10] & 0xFFFFFFFF) == zlib.crc32(state[H:]), "state checksum != zlib.crc32")
print(f"checksums of model and state match zlib.crc32: {hm[9] & 0xFFFFFFFF:08x} {hs[10] & 0xFFFFFFFF:08x}")


def with_model_crc(data):
    struct.pack_into("<I", data, 9 * 4, zlib.crc32(data[H:]))
    return data


def with_state_crc(data):
    struct.pack_into("<I", data, 10 * 4, zlib.crc32(data[H:]))
    return data


# models
m = bytearray(model)
m[H + 4 * 1000] ^= 0x10  # one flipped bit in wte
write("model_flipped.bin", m)
m = bytearray(model)
struct.pack_into("<f", m, H + 4 * 7, float("nan"))  # wte[7]
write("model_nan.bin", with_model_crc(m))
m = bytearray(model)
struct.pack_into("<f", m, H + 4 * 7, float("inf"))
struct.pack_into("<2i", m, 8 * 4, 0, 0)  # an llm.c file: no checksum, so only the value check can see it
write("model_inf_llmc.bin", m)
m = bytearray(model)
struct.pack_into("<2i", m, 8 * 4, 0, 0)
write("model_llmc.bin", m)  # llm.c's header: loads (unchecked)
m = bytearray(model[:H])
struct.pack_into("<i", m, 6 * 4, 1 << 30)  # C = 2^30 in a 1 KB file: sizes that wrap in 64 bits
struct.pack_into("<i", m, 5 * 4, 1 << 10)
write("model_huge_c.bin", m)
m = bytearray(model)
struct.pack_into("<i", m, 8 * 4, 12345)
write("model_slot8.bin", m)

# states: header slots [9] = run facts F, [10] = checksum; facts (64 bytes each) then m, v (fp32), then
# (GPU trainer, [8] = 1) the fp32 master weights
F = hs[9]
S = struct.unpack_from("<Q", state, 16 * 4)[0]  # shard size
m_off, v_off = H + 64 * F, H + 64 * F + 4 * S
expected = v_off + 4 * S + (4 * S if hs[8] == 1 else 0)
check(hs[5] == 0 and len(state) == expected, f"state layout: {len(state)} bytes, expected {expected}")
s = bytearray(state)
s[v_off + 4 * 3] ^= 0x01
write("state_flipped.bin", s)
s = bytearray(state)
struct.pack_into("<f", s, m_off + 4 * 11, float("nan"))
write("state_nan_m.bin", with_state_crc(s))
s = bytearray(state)
struct.pack_into("<f", s, v_off + 4 * 5, -1.0)
write("state_negative_v.bin", with_state_crc(s))
s = bytearray(state)
struct.pack_into("<i", s, 1 * 4, 1)
write("state_version1.bin", s)
s = bytearray(state)
struct.pack_into("<i", s, 9 * 4, 1 << 30)
write("state_facts.bin", s)
write("state_truncated.bin", state[: v_off + 100])
