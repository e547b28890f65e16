"""check_zero_memory.py: the CPU trainer's memory table against the ZeRO formulas, worked out here
independently of the trainer from the model shape it prints.

usage: check_zero_memory.py OUTPUT...   (each the start-up output of one run of train_gpt2)

fp32 AdamW on the CPU, P parameters, N processes, ZeRO stage z (bytes of this process):
  parameters  4P, or 4P/N at z = 3
  gradients   4P, or 4P/N at z >= 2
  optimizer   8P (m, v), or 8P/N at z >= 1; z = 1 also keeps its gradient slice, 4P/N
  buckets     z = 2: the embeddings' gradient (wte, wpe) and one layer's; z = 3 adds the gathered
              embeddings, final LayerNorm and two layers; each unit padded to a multiple of N*128
The predicted column must equal these (to the table's 0.01 MiB), and the allocated column must equal them
to within the padding: fewer than N*128 elements per sharded buffer (z = 1) or per unit (z >= 2, L + 2
units), plus the print rounding. A missing 1/N, a shard allocated whole or a bucket counted twice moves a
row by far more (at d2, one layer's unit is 0.76 MiB, the padding under 0.01 MiB)."""
import re
import sys

MiB = 1024.0 * 1024.0


def expected(text):
    m = re.search(r"model: L=(\d+) C=(\d+) NH=\d+ V=\d+ Vp=(\d+) maxT=(\d+), (\d+) parameters", text)
    L, C, Vp, maxT, P_printed = map(int, m.groups())
    z, N = map(int, re.search(r"ZeRO stage (\d) over (\d+) processes", text).groups())
    E, layer, F = Vp * C + maxT * C, 12 * C * C + 13 * C, 2 * C
    P = E + L * layer + F
    assert P == P_printed, f"the model has {P} parameters by its shape, the trainer says {P_printed}"
    pad = lambda n: -(-n // (N * 128)) * (N * 128)
    rows = {
        "trained": 4 * P / (N if z == 3 else 1),
        "gradients": 4 * P / (N if z >= 2 else 1),
        "optimizer state": 8 * P / (N if z >= 1 else 1) + (4 * P / N if z == 1 else 0),
    }
    if z >= 2:
        rows["ZeRO buckets"] = 4 * (pad(E) + max(pad(layer), pad(F)))
        if z == 3:
            rows["ZeRO buckets"] += 4 * (pad(E) + pad(F) + 2 * pad(layer))
    units = 1 if z <= 1 else L + 2
    margin = 4 * units * N * 128  # bytes of padding at most, per sharded row
    return z, N, rows, margin


def table(text):
    rows = {}
    for line in text.split("\n"):
        m = re.match(r"  (trained|gradients|optimizer state|ZeRO buckets)\b.*?\s([0-9.]+)\s+([0-9.]+)$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)) * MiB, float(m.group(3)) * MiB)
    return rows


def main():
    bad = 0
    for path in sys.argv[1:]:
        text = open(path).read()
        z, N, want, margin = expected(text)
        got = table(text)
        if set(got) != set(want):
            print(f"FAIL {path}: table rows {sorted(got)}, expected {sorted(want)}")
            bad += 1
            continue
        rounding = 0.005 * MiB
        for name, bytes_ in want.items():
            pred, alloc = got[name]
            sharded = name != "ZeRO buckets" and not (name == "trained" and z < 3) and \
                not (name == "gradients" and z < 2) and z > 0
            slack = (margin if sharded else 0) + rounding
            ok = abs(pred - bytes_) <= rounding and abs(alloc - bytes_) <= slack
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'} ZeRO-{z} N={N} {name:16s} formula {bytes_ / MiB:8.3f} MiB, "
                  f"predicted {pred / MiB:8.2f}, allocated {alloc / MiB:8.2f} (margin {slack / MiB:.3f})")
    sys.exit(1 if bad else 0)


main()
