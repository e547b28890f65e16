"""Writes a token shard of 100 tokens below V=64 with a known pattern (token i = 7 i mod 64), for
tests/model/test_pytorch_reference.sh.

  make_token_shard.py PATH
"""
import sys

import numpy as np

header = np.zeros(256, dtype="<i4")
header[:3] = [20240520, 1, 100]  # magic, version, token count
with open(sys.argv[1], "wb") as f:
    f.write(header.tobytes())
    f.write(((np.arange(100) * 7) % 64).astype("<u2").tobytes())
