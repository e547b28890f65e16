"""Overwrites one little-endian int32 of a file's header: the int32 at byte 4 * SLOT becomes VALUE.

  patch_int32.py FILE SLOT VALUE
"""
import struct
import sys

path, slot, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(4 * slot)
    f.write(struct.pack("<i", value))
