"""Writes a copy of an llm.c fp32 model file (v3) with parameters set to VALUE (default NaN). NaN: the first
value of wpe (position 0, which every sequence uses), a file the trainers must refuse to load. A finite
value (such as 3e38): the whole row of position 0, a file they load, whose every training step has a
non-finite loss and gradient (the LayerNorm's sum over C of 3e38 overflows to inf). The copy has llm.c's
header (no checksum: slots 8, 9 zero).
usage: poison_model.py <model.bin> <out.bin> [VALUE]"""
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
data = bytearray(open(src, "rb").read())
header = struct.unpack_from("<256i", data)
if header[0] != 20240326 or header[1] != 3:
    sys.exit(f"{src}: expected an fp32 (version 3) llm.c model file")
Vp, C = header[7], header[6]
wpe = 1024 + 4 * Vp * C  # the header, then wte (Vp, C) in fp32
value = float(sys.argv[3]) if len(sys.argv) > 3 else float("nan")
count = 1 if value != value else C
struct.pack_into(f"<{count}f", data, wpe, *([value] * count))
struct.pack_into("<2i", data, 8 * 4, 0, 0)  # llm.c's header: no checksum of the changed parameters
open(dst, "wb").write(data)
