"""
plot_log.py: plot the training logs our trainers write, as a PNG.

A log holds lines like
  s:100 trl:3.2841 lr:0.000600 norm:1.0312
  s:100 tel:3.3010
(space-separated key:value pairs; s = step, trl = train loss, tel = val loss, lr = learning rate, norm = grad
norm). Other keys and other lines are ignored. Several logs may be given to overlay runs.

Panels: train and val loss vs step; learning rate vs step; grad norm vs step (when any log has one).

Usage:
  python3 dev/plot_log.py log/main.log -o loss.png
  python3 dev/plot_log.py a.log b.log --labels "bf16,fp32" -o compare.png
"""

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

KEYS = ("trl", "tel", "lr", "norm")  # the keys plotted, besides the step s


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_log(path):
    """{key: ([steps], [values])} for each key of KEYS found in the log at path. A line counts when it has an
    integer s:<step> and at least one of KEYS with a float value; malformed values are skipped."""
    if not os.path.isfile(path):
        fail(f"log file '{path}' does not exist")
    series = {k: ([], []) for k in KEYS}
    parsed = 0
    with open(path, "r", errors="replace") as f:
        for line in f:
            fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
            try:
                step = int(fields["s"])
            except (KeyError, ValueError):
                continue
            found = False
            for k in KEYS:
                if k not in fields:
                    continue
                try:
                    value = float(fields[k])
                except ValueError:
                    continue
                series[k][0].append(step)
                series[k][1].append(value)
                found = True
            parsed += found
    if parsed == 0:
        fail(f"log file '{path}' has no parsable lines (expected 's:<step> trl:<loss> ...' or 's:<step> tel:<loss>')")
    return series


def main(argv=None):
    p = argparse.ArgumentParser(description="plot train/val loss and learning rate from trainer logs")
    p.add_argument("logs", nargs="+", help="log files (s:<step> trl:<loss> lr:<lr> norm:<norm> / s:<step> tel:<loss>)")
    p.add_argument("-o", "--output", default="loss.png", help="output PNG (default loss.png)")
    p.add_argument("--labels", default=None, help="comma-separated run labels, one per log (default: file names)")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--logy", action="store_true", help="log scale for the loss axis")
    args = p.parse_args(argv)

    labels = [os.path.basename(path) for path in args.logs]
    if args.labels is not None:
        labels = args.labels.split(",")
        if len(labels) != len(args.logs):
            fail(f"--labels has {len(labels)} labels for {len(args.logs)} log files")
    runs = [parse_log(path) for path in args.logs]
    has_norm = any(run["norm"][0] for run in runs)

    npanels = 3 if has_norm else 2
    fig, axes = plt.subplots(npanels, 1, figsize=(9, 3.2 * npanels), sharex=True, squeeze=False)
    ax_loss, ax_lr = axes[0][0], axes[1][0]
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        if run["trl"][0]:
            ax_loss.plot(*run["trl"], color=color, alpha=0.6, linewidth=1, label=f"{label} train")
        if run["tel"][0]:
            ax_loss.plot(*run["tel"], color=color, marker="o", markersize=3, linewidth=2, label=f"{label} val")
        if run["lr"][0]:
            ax_lr.plot(*run["lr"], color=color, label=label)
        if has_norm and run["norm"][0]:
            axes[2][0].plot(*run["norm"], color=color, alpha=0.7, linewidth=1, label=label)
    ax_loss.set_ylabel("loss")
    if args.logy:
        ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    if has_norm:
        axes[2][0].set_ylabel("grad norm")
        axes[2][0].grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()

    tmp = args.output + ".tmp.png"  # matplotlib picks the format from the suffix
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, args.output)
    except OSError as e:
        fail(f"could not write '{args.output}': {e}")
    print(f"wrote {args.output} ({len(runs)} run(s))")


if __name__ == "__main__":
    main()
