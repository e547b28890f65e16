"""Writes a copy of an llm.c fp32 model file (v3) with one parameter set to NaN: the first value of wpe
(position 0, which every sequence uses), so every loss and every gradient of a training step is NaN.
usage: poison_model.py <model.bin> <out.bin>"""
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
data = bytearray(open(src, "rb").read())
header = struct.unpack_from("<256i", data)
if header[0] != 20240326 or header[1] != 3:
    sys.exit(f"{src}: expected an fp32 (version 3) llm.c model file")
Vp, C = header[7], header[6]
wpe = 1024 + 4 * Vp * C  # the header, then wte (Vp, C) in fp32
struct.pack_into("<f", data, wpe, float("nan"))
open(dst, "wb").write(data)
