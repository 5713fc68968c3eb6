#!/usr/bin/env python3
"""The sfcdc reliability suite: crash loops, emulator fault storms, downtime past retention, a
PostgreSQL restart, a full or read-only disk, and a fleet of three instances hit at random,
against `sfcdc emulator` and `sfcdc run` as separate processes on loopback, ending with one
ledger of events, jobs expected, created, lost and duplicated.

Run it through scripts/reliability.sh, which builds the binary. Exit status: 0 when nothing was
lost or duplicated and every scenario drained, 1 otherwise, 2 on a usage or harness error.
"""

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Cleanup, Fail, print_ledger, say  # noqa: E402
import scenarios  # noqa: E402


class Context:
    pass


def parse(argv):
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="scripts/reliability.sh",
        description="Reliability suite: crash loops, fault storms, downtime past retention, a "
        "PostgreSQL restart, a full or read-only disk, a fleet hit at random; prints a ledger and "
        "fails on any lost or duplicated job.",
    )
    p.add_argument("--bin", default=env("SFCDC_BIN", "target/debug/sfcdc"), help="the sfcdc binary")
    p.add_argument("--quick", action="store_true", help="small sizes: about a minute and a half")
    p.add_argument(
        "--kills", type=int, default=int(env("SFCDC_RELIABILITY_KILLS", "0")) or None,
        help="SIGKILLs in the crash loop (default 20, --quick 8; env SFCDC_RELIABILITY_KILLS)",
    )
    p.add_argument(
        "--hits", type=int, default=int(env("SFCDC_RELIABILITY_HITS", "0")) or None,
        help="random hits (SIGKILL, SIGSTOP, SIGTERM) in the fleet scenario (default 20, "
        "--quick 6; env SFCDC_RELIABILITY_HITS)",
    )
    p.add_argument(
        "--only", default=env("SFCDC_RELIABILITY_SCENARIOS", ",".join(scenarios.ALL)),
        help="comma-separated scenarios to run: " + ",".join(scenarios.ALL),
    )
    p.add_argument(
        "--pg-url",
        default=env("SFCDC_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        help="the PostgreSQL server (any database on it; the suite creates and drops "
        "sfcdc_reliability and sfcdc_reliability_fleet, and the postgres scenario restarts it); "
        "default SFCDC_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test",
    )
    p.add_argument(
        "--pg", dest="pg_mode", choices=("system", "private"),
        default=env("SFCDC_RELIABILITY_PG", "system"),
        help="system: restart the server behind --pg-url (default); private: a throwaway "
        "cluster of its own, so others sharing the server are not disturbed",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (printed; default: time)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and its logs")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the ledger as JSON")
    return p.parse_args(argv)


def configure(args):
    ctx = Context()
    q = args.quick
    ctx.binary = os.path.abspath(args.bin)
    ctx.kills = args.kills or (8 if q else 20)
    ctx.fleet_hits = args.hits or (6 if q else 20)
    ctx.storms = 3 if q else 6
    ctx.storm_seconds = 3
    ctx.downtimes = 1 if q else 3
    ctx.downtime_seconds = 3
    ctx.pg_outages = 1 if q else 2
    ctx.pg_down_seconds = 4 if q else 8
    ctx.disk_phase = 3 if q else 5
    ctx.disk_hold = 6 if q else 10
    ctx.interval = 0.5  # seconds between producer steps (one approval each)
    ctx.drain_timeout = 150
    ctx.recover_timeout = 20  # after space or the database returns, until new jobs are made
    ctx.pg_url = args.pg_url
    ctx.pg_mode = args.pg_mode
    ctx.seed = args.seed if args.seed is not None else int(time.time())
    ctx.rng = random.Random(ctx.seed)
    return ctx


def main(argv):
    args = parse(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenarios.ALL]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(scenarios.ALL)}")
        return 2
    if not os.access(args.bin, os.X_OK):
        print(f"no sfcdc binary at {args.bin} (build it, or set SFCDC_BIN)")
        return 2
    ctx = configure(args)
    made_workdir = args.workdir is None
    ctx.workdir = args.workdir or tempfile.mkdtemp(prefix="sfcdc-reliability-")
    os.makedirs(ctx.workdir, exist_ok=True)
    ctx.cleanup = Cleanup(ctx.workdir)
    # A private copy: a rebuild of the tree during the run must not swap the binary under it.
    ctx.binary = shutil.copy2(ctx.binary, os.path.join(ctx.workdir, "sfcdc"))

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    rows = []
    say(
        f"reliability suite: {', '.join(names)}; seed {ctx.seed}; {ctx.kills} kills; "
        f"{ctx.fleet_hits} fleet hits; "
        f"{'quick' if args.quick else 'default'} sizes; binary {args.bin}; work dir {ctx.workdir}"
    )
    started = time.time()
    try:
        for name in names:
            say(f"== {name}")
            t0 = time.time()
            try:
                row = scenarios.ALL[name](ctx)
            except Fail as e:
                row = error_row(name, str(e))
            except Exception as e:  # noqa: BLE001 - one scenario's bug must not hide the others
                traceback.print_exc()
                row = error_row(name, f"{type(e).__name__}: {e}")
            row["notes"].insert(0, f"took {time.time() - t0:.0f}s")
            rows.append(row)
            say(f"== {name}: {row['verdict']}")
    finally:
        ctx.cleanup.run()
        if rows:
            print_ledger(rows)
            print(f"\nseed {ctx.seed}; {time.time() - started:.0f}s in all")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=2)
        if args.keep:
            print(f"logs and stores kept in {ctx.workdir}")
        elif made_workdir:
            shutil.rmtree(ctx.workdir, ignore_errors=True)
    return 0 if rows and all(r["verdict"] == "PASS" for r in rows) else 1


def error_row(name, message):
    say(f"{name}: harness error: {message}")
    return {
        "scenario": name, "events": 0, "expected": 0, "created": 0, "completed": 0, "lost": 0,
        "duplicated": 0, "operations": 0, "resubmits": 0, "drained": False, "verdict": "ERROR",
        "notes": [], "failures": [f"harness error: {message}"], "details": [],
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
