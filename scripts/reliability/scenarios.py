"""The reliability scenarios. Each runs its own emulator and its own store, makes order
approvals while it breaks something, lets a clean run drain everything, and returns its ledger
row (see harness.ledger)."""

import os
import re
import sqlite3
import subprocess
import time

from harness import (
    Emulator,
    Fail,
    Postgres,
    Producer,
    Salesforce,
    Service,
    ledger,
    say,
    wait_drained,
)


class Scenario:
    def __init__(self, ctx, name, latency_ms=1500):
        self.ctx = ctx
        self.name = name
        self.dir = os.path.join(ctx.workdir, name)
        os.makedirs(self.dir)
        self.rng = ctx.rng
        self.notes = []
        self.failures = []
        self.emu = Emulator(ctx.cleanup, ctx.binary, self.dir, ctx.rng.randrange(1 << 32), latency_ms)
        self.sf = Salesforce(self.emu)
        self.producer = None
        self.service = None

    def service_on(self, db_url, extra=None):
        self.service = Service(self.ctx.cleanup, self.ctx.binary, self.emu, self.dir, db_url, extra)
        return self.service

    def produce(self, interval):
        self.producer = Producer(self.sf, self.rng, interval)
        self.producer.start()
        return self.producer

    def bulk(self, count):
        """A burst of generated order change events (about 10% approvals), between producer
        steps."""
        with self.producer.lock:
            return self.emu.control("POST", "/emulator/bulk", {"count": count})

    def keep_alive(self, why):
        """Restarts the service if it exited on its own (a finding, noted), as a supervisor
        would, so the scenario can go on."""
        if not self.service.alive():
            code = self.service.proc.returncode
            tail = [ln for ln in self.service.log_lines()[0][-200:] if " ERROR " in ln][-2:]
            self.failures.append(f"sfcdc run exited by itself ({why}), code {code}: {tail}")
            self.service.start()

    def hold(self, seconds, why):
        """Waits, checking that the service stays up."""
        end = time.time() + seconds
        while time.time() < end:
            self.keep_alive(why)
            time.sleep(0.25)

    def recovered(self, why, timeout):
        """Seconds until an approval made from now on has its job, with the service left as it
        is (no restart); None if none does within `timeout`."""
        mark = len(self.producer.approved)
        t0 = time.time()
        while time.time() - t0 < timeout:
            self.keep_alive(why)
            fresh = self.producer.approved[mark:]
            if fresh:
                try:
                    have = {j["order_id"] for j in self.service.jobs()}
                except Fail:
                    have = set()
                if any(o in have for o in fresh):
                    return time.time() - t0
            time.sleep(0.5)
        return None

    def expect_recovery(self, why, timeout, offset):
        """Notes how long the service took to make jobs again after `why`; if it did not within
        `timeout`, records a failure with what it logged, and restarts it to go on."""
        took = self.recovered(why, timeout)
        if took is not None:
            self.notes.append(f"jobs made again {took:.1f}s {why}, without a restart")
            return
        excerpt = error_excerpt(self.service.log_lines(offset)[0], r" ERROR ")
        self.failures.append(
            f"no new approval became a job within {timeout}s {why} (no restart); "
            f"errors logged since: {excerpt}"
        )
        code = self.service.stop()
        self.service.start()
        self.notes.append(f"restarted the service (SIGTERM exit {code}) to go on")

    def finish(self, drain_timeout):
        """Stops making approvals, lets the (running) service drain, stops it with SIGTERM, and
        counts."""
        self.producer.stop()
        self.keep_alive("while draining")
        say(f"{self.name}: draining")
        drained, waited, reason = wait_drained(self.service, self.emu, self.sf, drain_timeout)
        if not drained:
            self.failures.append(f"not drained after {waited:.0f}s: {reason}")
        else:
            self.notes.append(f"drained in {waited:.0f}s once the faults stopped")
        code = self.service.stop()
        if code != 0:
            self.failures.append(f"the final run exited with {code} on SIGTERM (expected 0)")
        lines = self.service.log_lines()[0]
        with open(self.emu.log, errors="replace") as f:
            emulator_lines = f.read().splitlines()
        for who, log in (("service", lines), ("emulator", emulator_lines)):
            panics = [ln for ln in log if "panicked" in ln]
            if panics:
                self.failures.append(f"{len(panics)} panics in the {who} log, first: {panics[0]}")
        errors = sum(1 for ln in lines if " ERROR " in ln)
        self.notes.append(
            f"{self.service.starts} service starts, {errors} ERROR log lines; "
            f"producer: {len(self.producer.approved)} REST approvals, {self.producer.noise} "
            f"address changes, {self.sf.refused} of its calls refused 503, "
            f"{self.sf.relogins} re-logins"
        )
        row = ledger(self.name, self.emu, self.sf, self.service, drained, self.notes)
        row["failures"] += self.failures
        bad = row["lost"] or row["duplicated"] or not drained or row["failures"]
        row["verdict"] = "FAIL" if bad else "PASS"
        row["log"] = self.service.log
        return row

    def close(self):
        if self.producer and self.producer.is_alive():
            self.producer.stopping.set()
        if self.service and self.service.alive():
            self.service.kill()
        if self.emu.proc.poll() is None:
            self.emu.proc.terminate()
            try:
                self.emu.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.emu.proc.kill()


def error_excerpt(lines, pattern=r" (ERROR|WARN) ", limit=3):
    """The first few distinct warning or error messages (timestamps and spans dropped)."""
    seen, out = set(), []
    for ln in lines:
        if not re.search(pattern, ln):
            continue
        msg = re.sub(r"^\S+\s+", "", ln)  # the timestamp
        key = msg[:80]
        if key not in seen:
            seen.add(key)
            out.append(msg[:400])
        if len(out) >= limit:
            break
    return out


def job_count(svc):
    try:
        return len(svc.jobs())
    except Fail:  # not migrated yet
        return 0


def tally(lines, patterns):
    return {k: sum(1 for ln in lines if re.search(p, ln)) for k, p in patterns.items()}


# ---------------------------------------------------------------------------------------------


def crash(ctx):
    """SIGKILL `sfcdc run` N times at chosen points while approvals keep coming, then drain
    with a clean run."""
    s = Scenario(ctx, "crash")
    try:
        # Slow fulfilment, mostly asynchronous: a submit hangs 400 ms after its operation exists,
        # a status read 150 ms after it is counted, so a kill right after either is seen lands
        # inside it. One operation in five completes synchronously (201).
        s.emu.fulfilment(submit_delay_ms=400, poll_delay_ms=150, sync_rate=0.2)
        s.db = os.path.join(s.dir, "sfcdc.db")
        svc = s.service_on(f"sqlite://{s.db}")
        s.produce(ctx.interval)
        kinds = {k: 0 for k in KILLS}
        kinds["timed out, at random"] = 0
        for i in range(ctx.kills):
            svc.start()
            kind = list(KILLS)[i % len(KILLS)]
            result = KILLS[kind](s)
            if result != "killed":
                if not svc.alive():
                    s.failures.append(
                        f"kill {i + 1}: the service had already exited ({svc.proc.returncode})"
                    )
                    continue
                svc.kill()
            landed = kind if result else "timed out, at random"
            kinds[landed] += 1
            say(f"crash: SIGKILL {i + 1}/{ctx.kills} {landed}")
        s.notes.append(
            f"{ctx.kills} SIGKILLs: " + ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        )
        svc.start()
        s.hold(2, "after the last kill")
        return checked(s.finish(ctx.drain_timeout), s.db)
    finally:
        s.close()


def counted(s, counters):
    """Waits (after a random pause) until the fulfilment system counts a new request of the
    given kinds: one it has received and, with the configured delays, not yet answered."""
    time.sleep(s.rng.uniform(0, 1.5))
    base = sum(s.emu.fulfilment_stats()[c] for c in counters)
    deadline = time.time() + 10
    while time.time() < deadline:
        if sum(s.emu.fulfilment_stats()[c] for c in counters) > base:
            return True
        time.sleep(0.02)
    return False


def mid_submit(s):
    return counted(s, ("submit_requests",))


def mid_poll(s):
    return counted(s, ("polls", "batch_polls"))


def mid_batch(s):
    """A random moment in the ingest of a 200-event burst."""
    time.sleep(s.rng.uniform(0.3, 1.0))
    s.bulk(200)
    time.sleep(s.rng.uniform(0.02, 0.4))
    return True


def mid_finish(s):
    """Between a job's write-back to Salesforce and the store transaction that records it: the
    suite takes SQLite's write lock (BEGIN IMMEDIATE), waits for an order to turn Activated (its
    worker now waits for the lock to record the completion), and kills the service before
    letting go. Returns "killed" once it has killed, False if no order finished within 4 s.

    The lock is taken while a submission is in flight (a synchronous one then finishes in the
    submit step itself) or a second after one (that job then polls an operation due to finish,
    as they take 1.5 s)."""
    counted(s, ("submit_requests",))
    time.sleep(s.rng.choice((0.0, 1.0)))
    soql = "SELECT Id FROM Order WHERE Activation_Status__c = 'Activated'"
    con = sqlite3.connect(s.db, timeout=10, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        base = len(s.sf.query(soql))
        deadline = time.time() + 4  # well inside sfcdc's 10 s busy timeout
        while time.time() < deadline:
            if len(s.sf.query(soql)) > base:
                s.service.kill()
                return "killed"
            time.sleep(0.02)
        return False
    finally:
        con.execute("ROLLBACK")
        con.close()


KILLS = {
    "mid-submit": mid_submit,
    "mid-poll": mid_poll,
    "mid-batch": mid_batch,
    "mid-finish": mid_finish,
}


# ---------------------------------------------------------------------------------------------


def faults(ctx):
    """Storms of every emulator fault at once, repeatedly, during one run."""
    s = Scenario(ctx, "faults")
    try:
        svc = s.service_on(f"sqlite://{os.path.join(s.dir, 'sfcdc.db')}")
        svc.start()
        prod = s.produce(ctx.interval)
        # An order that is never approved, to take corrupted events.
        account = s.sf.query("SELECT Id FROM Account LIMIT 1")[0]["Id"]
        noise = s.sf.call(
            "POST",
            "/sobjects/Order",
            {"AccountId": account, "EffectiveDate": "2024-06-01", "Status": "Draft",
             "Name": "Reliability noise"},
        )["id"]
        s.hold(2, "before the storms")
        corrupted = 0
        for r in range(ctx.storms):
            with prod.lock:
                # Corrupt the next two events, and make them: they are address changes of the
                # noise order (or the worker's write-backs), never an approval, so the ledger
                # can expect every approval to become a job.
                s.emu.fault(kind="corrupt_next", count=2)
                prod.touch(noise)
                prod.touch(noise)
                corrupted += 2
                s.emu.fulfilment(error_rate=0.3)
                s.emu.fault(kind="rest_unavailable", count=s.rng.randint(5, 20))
                s.emu.fault(kind="expire_tokens")
                s.emu.fault(kind="disconnect_after", events=s.rng.randint(5, 60))
                if r % 2:
                    s.emu.fault(kind="refuse_subscriptions", seconds=2)
                s.emu.control("POST", "/emulator/bulk", {"count": 150})
            say(f"faults: storm {r + 1}/{ctx.storms}")
            s.hold(ctx.storm_seconds, f"during storm {r + 1}")
        s.emu.control("DELETE", "/emulator/faults")
        s.emu.fulfilment(error_rate=0.0)
        fstats = s.emu.fulfilment_stats()
        s.notes.append(
            f"{ctx.storms} storms, each: disconnect-after, rest-unavailable, expire-tokens, "
            f"corrupt-next=2, fulfilment 5xx rate 0.3, a 150-event burst"
            f"{', refuse-subscriptions=2s every other one' if ctx.storms > 1 else ''}; "
            f"fulfilment answered {fstats['errors_injected']} requests 503"
        )
        row = s.finish(ctx.drain_timeout)
        seen = tally(
            svc.log_lines()[0],
            {
                "streams cut": r"Stream failed",
                "re-logins after expired tokens": r"Session rejected",
                "Salesforce 503s met": r"Salesforce REST 503",
                "fulfilment 503s met": r"answered 503",
                "events quarantined": r"Event quarantined",
            },
        )
        row["notes"].append("the service log shows " + ", ".join(f"{v} {k}" for k, v in seen.items()))
        quarantined = len(svc.quarantined())
        row["notes"].append(f"{corrupted} events corrupted, {quarantined} quarantined")
        if quarantined < corrupted:
            row["failures"].append(f"{corrupted - quarantined} corrupted events were not quarantined")
            row["verdict"] = "FAIL"
        return row
    finally:
        s.close()


def retention(ctx):
    """Downtime past the retention window, with approvals during it: the service stops, orders
    are approved, every retained event expires, and the restarted service finds its stored
    replay id rejected. It must reconcile the lost window by itself: every approval one job."""
    s = Scenario(ctx, "retention", latency_ms=300)
    try:
        svc = s.service_on(f"sqlite://{os.path.join(s.dir, 'sfcdc.db')}")
        svc.start()
        s.produce(ctx.interval)
        s.hold(2, "before the first downtime")
        recoveries, while_down = 0, 0
        for d in range(ctx.downtimes):
            code = svc.stop()
            before = len(s.producer.approved)
            if code != 0:
                s.failures.append(f"downtime {d + 1}: SIGTERM exit {code} (expected 0)")
            # Down: the producer keeps approving; then the events age out of retention.
            time.sleep(ctx.downtime_seconds)
            with s.producer.lock:
                s.emu.fault(kind="expire_events")
                while_down += len(s.producer.approved) - before
            say(f"retention: downtime {d + 1}/{ctx.downtimes}, events expired; restarting")
            offset = svc.log_size()
            svc.start()
            s.hold(ctx.downtime_seconds, f"after downtime {d + 1}")
            recovered = tally(
                svc.log_lines(offset)[0],
                {
                    "rejected": r"REPLAY ID REJECTED",
                    "recovered": r"Recovered the window a rejected replay id lost",
                },
            )
            if not recovered["rejected"]:
                s.failures.append(f"downtime {d + 1}: the expired replay id was not rejected")
            recoveries += recovered["recovered"]
        row = s.finish(ctx.drain_timeout)
        row["notes"].append(
            f"{ctx.downtimes} downtimes of {ctx.downtime_seconds}s past retention, "
            f"{while_down} approvals made while down; the service logged {recoveries} "
            f"recovered windows"
        )
        if recoveries < ctx.downtimes:
            row["failures"].append(
                f"{ctx.downtimes - recoveries} lost windows were not recovered (no WARN line)"
            )
            row["verdict"] = "FAIL"
        return row
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------


def postgres(ctx):
    """PostgreSQL stopped and started again under a running service."""
    s = Scenario(ctx, "postgres")
    try:
        pg = Postgres(ctx.cleanup, ctx.pg_mode, ctx.pg_url, s.dir)
        url = pg.scratch_database("sfcdc_reliability")
        s.notes.append(f"PostgreSQL ({ctx.pg_mode}) on port {pg.port}, restarted by: {pg.how}")
        s.emu.fulfilment(submit_delay_ms=200, poll_delay_ms=50)
        svc = s.service_on(url)
        svc.start()
        s.produce(ctx.interval)
        deadline = time.time() + 30
        while time.time() < deadline and job_count(svc) < 3:
            time.sleep(0.5)
        s.hold(1, "before the restart")
        for k in range(ctx.pg_outages):
            before = pg.psql("SELECT pg_postmaster_start_time()").strip()
            offset = svc.log_size()
            s.bulk(100)
            pg.stop()
            down = time.time()
            say(f"postgres: stopped ({k + 1}/{ctx.pg_outages})")
            s.bulk(100)
            s.hold(ctx.pg_down_seconds, "while PostgreSQL was down")
            pg.start()
            after = pg.psql("SELECT pg_postmaster_start_time()").strip()
            say(f"postgres: started again after {time.time() - down:.1f}s")
            if before == after:
                s.failures.append("PostgreSQL did not really restart (same start time)")
            s.expect_recovery("after PostgreSQL came back", ctx.recover_timeout, svc.log_size())
            excerpt = error_excerpt(svc.log_lines(offset)[0])
            s.notes.append(
                f"outage {k + 1}: down {ctx.pg_down_seconds}s (postmaster start {before} -> "
                f"{after}); the service logged: {excerpt or 'nothing'}"
            )
        return s.finish(ctx.drain_timeout)
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------


def disk(ctx):
    """The SQLite file on a small tmpfs: filled up under a running service, then read-only."""
    s = Scenario(ctx, "disk")
    mnt = os.path.join(s.dir, "disk")
    os.makedirs(mnt)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise Fail(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk scenario needs it")
        with open(os.path.join(ctx.workdir, "mounts"), "a") as f:
            f.write(mnt + "\n")
        unmount = ctx.cleanup.on_exit(f"unmount {mnt}", lambda: umount(mnt))
        db = os.path.join(mnt, "sfcdc.db")
        svc = s.service_on(f"sqlite://{db}")
        svc.start()
        s.produce(ctx.interval)
        s.hold(ctx.disk_phase, "before the disk filled")

        # 1. Full, mid-run.
        offset = svc.log_size()
        filler = os.path.join(mnt, "filler")
        filled = fill(filler)
        st = os.statvfs(mnt)
        say(f"disk: full ({filled >> 20} MiB of filler, {st.f_bavail * st.f_frsize} bytes free)")
        s.bulk(200)
        s.hold(ctx.disk_hold / 2, "while the disk was full")
        s.bulk(200)
        s.hold(ctx.disk_hold / 2, "while the disk was full")
        full_log = svc.log_lines(offset)[0]
        full_errors = error_excerpt(full_log, r" ERROR ")
        s.notes.append(
            "disk full for {}s under a running service: {}".format(
                ctx.disk_hold, full_errors or "NO ERROR LOGGED"
            )
        )
        if not any(re.search(r"full|space", ln, re.I) for ln in full_errors):
            s.failures.append("no error naming the full disk was logged while it was full")
        os.remove(filler)
        say("disk: space returned")
        s.expect_recovery("after space returned", ctx.recover_timeout, svc.log_size())
        s.hold(ctx.disk_phase, "after space returned")

        # 2. Read-only. Linux refuses to remount a filesystem read-only while a process has a
        # file on it open for writing (EBUSY), so a live remount is only attempted; the
        # read-only case is a restart onto a filesystem that has gone read-only.
        r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
        if r.returncode == 0:
            s.notes.append("live remount read-only succeeded (unexpected); remounted rw after")
            offset = svc.log_size()
            s.hold(ctx.disk_hold, "while the disk was read-only")
            s.notes.append(f"read-only live: {error_excerpt(svc.log_lines(offset)[0], ' ERROR ')}")
            subprocess.run(["mount", "-o", "remount,rw", mnt], check=True)
        else:
            s.notes.append(f"live remount read-only refused: {r.stderr.strip().splitlines()[0]}")
        code = svc.stop()
        if code != 0:
            s.failures.append(f"SIGTERM before the read-only restart: exit {code}")
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
        say("disk: read-only; starting the service on it")
        offset = svc.log_size()
        svc.start()
        t0 = time.time()
        while svc.alive() and time.time() - t0 < 20:
            time.sleep(0.25)
        ro_log = svc.log_lines(offset)[0]
        if svc.alive():
            s.notes.append(
                f"on a read-only filesystem the service kept running 20s: "
                f"{error_excerpt(ro_log, ' ERROR ')}"
            )
            svc.kill()
        else:
            tail = [ln for ln in ro_log if ln.strip() and not ln.startswith("====")][-2:]
            clear = any(re.search(r"read-only|readonly|sfcdc\.db", ln, re.I) for ln in tail)
            s.notes.append(
                f"on a read-only filesystem the service exited {svc.proc.returncode} "
                f"after {time.time() - t0:.1f}s: {tail}"
                + ("" if clear else " (UNCLEAR: names neither the file nor the read-only filesystem)")
            )
            if svc.proc.returncode == 0:
                s.failures.append("started on a read-only store, the service exited 0")
        subprocess.run(["mount", "-o", "remount,rw", mnt], check=True)
        say("disk: writable again")
        svc.start()
        s.hold(ctx.disk_phase, "after the filesystem became writable")
        row = checked(s.finish(ctx.drain_timeout), db)
        ctx.cleanup.done(unmount)
        return row
    finally:
        s.close()


def fill(path):
    """Writes `path` until the filesystem is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                    written += chunk
                except OSError:
                    break
    return written


def umount(path):
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


def checked(row, db):
    """Adds the SQLite file's PRAGMA integrity_check to a ledger row (the service is stopped)."""
    check = integrity(db)
    row["notes"].append(f"PRAGMA integrity_check: {check}")
    if check != "ok":
        row["failures"].append(f"the SQLite file is damaged: {check}")
        row["verdict"] = "FAIL"
    return row


def integrity(db):
    """PRAGMA integrity_check of a stopped service's SQLite file."""
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(r[0] for r in rows)
    finally:
        con.close()


ALL = {
    "crash": crash,
    "faults": faults,
    "retention": retention,
    "postgres": postgres,
    "disk": disk,
}
