"""Sorts `perf report --no-children --sort dso,sym --stdio -q` lines into the parts of sfcdc's
hot path and prints one table: the share of each run's CPU samples per part.

    profile_table.py RUN.txt [RUN.txt ...]

A sample goes to the first part whose pattern matches its DSO and symbol ("[k]" marks the kernel).
"""

import os
import re
import sys

PARTS = [
    ("TLS (rustls, ring)", r"rustls|ring_core|\bring::|aes_|gcm_|chacha|poly1305|sha256|sha512|x25519|bn_"),
    ("gRPC framing (h2, hyper, tonic, prost, bytes)", r"\bh2::|hyper|tonic|prost|http_body|tower|\bbytes::"),
    ("Avro decode", r"sfcdc::decode|compact_str|apache_avro|from_utf8"),
    ("JSON rendering (tail)", r"serde_json|sfcdc::admin::tail|\bryu|\bitoa"),
    ("rules, cache and lookups", r"sfcdc::rules|sfcdc::cache|moka|sfcdc::ingest|sfcdc::salesforce|sfcdc::sfid"),
    ("the store (SQLite, sqlx)", r"sqlite3|libsqlite|sqlx|sfcdc::store|\bwal[A-Z]|\bvdbe|btree|pager|pcache|getPage|readDbPage|balance_nonroot|moveToRoot|pageInsertArray|subjournal|yy_reduce|unix(Write|Read|Sync)|flume"),
    ("subscriber and sink", r"sfcdc::source|sfcdc::telemetry|prometheus|tracing"),
    ("allocator and memcpy", r"malloc|free|realloc|calloc|memcpy|memmove|memset|memcmp|__memc|_int_|unlink_chunk|alloc::|__rdl_|__rust_"),
    ("hashing (SipHash, hashbrown)", r"sip::Hasher|hashbrown"),
    ("async runtime (tokio)", r"tokio|parking_lot|futures|crossbeam|std::sync|pthread"),
    ("kernel: scheduling and wake-ups", r"\[k\].*(finish_task_switch|schedule|futex|wake_up|_raw_spin_unlock|select_task|enqueue|dequeue|irqentry)"),
    ("kernel: file writes (SQLite WAL)", r"\[k\].*(ext4|filemap|block_|mark_buffer|folio|jbd2|xas_|page_cache|generic_perform_write|iomap)"),
    ("kernel: network, pipes and other syscalls", r"\[k\]"),
    ("other", r".*"),
]
LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+(\[[.k]\])\s+(.*)$")


def shares(path):
    totals = {name: 0.0 for name, _ in PARTS}
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        # The binary's own name says nothing of the part (and a copy named e.g. sfcdc-sqlx091
        # would match the store's pattern): only libraries and the kernel are matched by DSO.
        if dso.startswith("sfcdc"):
            dso = ""
        text = f"{dso} {kind} {sym}"
        for name, pattern in PARTS:
            if re.search(pattern, text):
                totals[name] += pct
                break
    return totals


def main():
    runs = sys.argv[1:]
    if not runs:
        sys.exit(__doc__)
    tables = [shares(p) for p in runs]
    names = [os.path.splitext(os.path.basename(p))[0] for p in runs]
    width = max(len(n) for n, _ in PARTS)
    print(f"{'part':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for name, _ in PARTS:
        row = [t[name] for t in tables]
        if max(row) < 0.5:
            continue
        print(f"{name:<{width}}  " + "  ".join(f"{v:>9.1f}%" for v in row))


if __name__ == "__main__":
    main()
