"""Draws RSS over time for `sfcdc bench --service-only --rss-csv` runs.

    plot_rss.py OUT.png RUN.csv [RUN.csv ...]

Each CSV has the columns seconds, rss_mib, checkpoint_position (written every 100 ms). The plot
has one line per run: RSS (MiB) against minutes since the service started, labelled with the
event count in the file's name (rss-<EVENTS>.csv, or rss-<EVENTS>-noworker.csv for a run with the
worker off), with the 64 MiB aim drawn across.
"""

import csv
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    xs, ys = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            xs.append(float(row["seconds"]) / 60)
            ys.append(float(row["rss_mib"]))
    name = os.path.basename(path)
    m = re.search(r"(\d+)", name)
    return xs, ys, int(m.group(1)) if m else 0, "noworker" not in name


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, runs = sys.argv[1], sys.argv[2:]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for path in runs:
        xs, ys, events, worker = read(path)
        label = (
            f"{events / 1e6:g}M events, worker {'on' if worker else 'off'} "
            f"(highest sample {max(ys, default=0):.0f} MiB)"
        )
        ax.plot(xs, ys, linewidth=1.2, label=label)
    ax.axhline(64, color="grey", linestyle="--", linewidth=0.8, label="64 MiB aim")
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("RSS of sfcdc run (MiB)")
    ax.set_title("sfcdc run on SQLite, the emulator in its own process")
    ax.set_ylim(bottom=0)
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    print(f"plot_rss: wrote {out}")


if __name__ == "__main__":
    main()
