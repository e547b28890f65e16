"""Prints the first N tokens of a token shard (int32 header of 256 slots, then uint16 tokens), space-separated.

  shard_tokens.py SHARD N
"""
import struct
import sys

path, n = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    f.seek(256 * 4)
    data = f.read(2 * n)
if len(data) != 2 * n:
    sys.exit(f"{path} has fewer than {n} tokens")
print(" ".join(map(str, struct.unpack(f"<{n}H", data))))
