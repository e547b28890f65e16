"""(d) of tests/model/test_pytorch_reference.sh: PATH is a PNG of more than 10 kB.

  check_png.py PATH
"""
import sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, "not a PNG"
print(f"  ok    PNG written ({len(data)} bytes)")
