"""Compares the step and validation lines of two training logs (train_gpt2 / train_gpt2cu stdout).

  compare_train_logs.py REF OTHER --label TEXT [--tol REL] [--steps N] [--from-step S] [--identical] [--no-val]

Each "step s/n | loss L | lr R | norm G |" line and each "val loss V" line is parsed. OTHER must have the
steps S..N (S defaults to 1) and REF must have them too; loss, lr, norm and the validation losses agree to
--tol relative (max over all values), or, with --identical, the step lines (up to the timing) and the
validation lines are the same strings; --no-val ignores the validation lines. Prints one line; exits 1 on a mismatch.
"""
import argparse
import re
import sys

STEP = re.compile(r"step\s+(\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| norm (\S+) \|")
VAL = re.compile(r"val loss (\S+)")


def parse(path):
    steps, vals = {}, []
    with open(path) as f:
        for line in f:
            m = STEP.match(line)
            if m:
                steps[int(m.group(1))] = (m.group(3), m.group(4), m.group(5))
                continue
            m = VAL.match(line)
            if m:
                vals.append(m.group(1))
    return steps, vals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--label", required=True)
    ap.add_argument("--tol", type=float, default=0.0)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--from-step", type=int, default=1)
    ap.add_argument("--identical", action="store_true")
    ap.add_argument("--no-val", action="store_true", help="ignore the validation lines")
    a = ap.parse_args()
    ref, ref_val = parse(a.ref)
    other, other_val = parse(a.other)
    if a.no_val:
        ref_val, other_val = [], []
    want = list(range(a.from_step, a.steps + 1))
    problems = []
    if sorted(other) != want:
        problems.append(f"{a.other} has steps {sorted(other)}, expected {want}")
    if any(s not in ref for s in want):
        problems.append(f"{a.ref} lacks some of the steps {want}")
    worst = 0.0
    if not problems:
        if a.identical:
            if any(ref[s] != other[s] for s in want):
                problems.append("step lines differ")
            if other_val != ref_val[len(ref_val) - len(other_val):]:
                problems.append("validation lines differ")
        else:
            pairs = [(float(x), float(y)) for s in want for x, y in zip(ref[s], other[s])]
            if len(ref_val) != len(other_val):
                problems.append(f"{len(ref_val)} vs {len(other_val)} validation lines")
            pairs += [(float(x), float(y)) for x, y in zip(ref_val, other_val)]
            worst = max(abs(x - y) / max(abs(x), 1e-30) for x, y in pairs)
            if not worst <= a.tol:
                problems.append(f"max rel diff {worst:.2e} > tol {a.tol:g}")
    what = "identical" if a.identical else f"max rel diff {worst:.2e} (tol {a.tol:g})"
    print(f"{a.label:<58} {len(want)} steps, {what}: {'FAIL ' + '; '.join(problems) if problems else 'ok'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
