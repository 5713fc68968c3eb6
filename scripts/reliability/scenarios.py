"""The reliability scenarios. Each runs its own emulator and its own store, makes order
approvals while it breaks something, lets a clean run drain everything, and returns its ledger
row (see harness.ledger)."""

import os
import re
import signal
import sqlite3
import statistics
import subprocess
import threading
import time

from harness import (
    CHANNELS,
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


# ---------------------------------------------------------------------------------------------

FLEET_SIZE = 3
FLEET_TTL = 3.0  # SFCDC_LEASE_TTL, seconds
HIT_KINDS = ("SIGKILL", "SIGSTOP", "SIGTERM")

# Every write of a channel's checkpoint is audited in the scratch database: a trigger records
# any update that moves a replay id backwards (or back to a preset), so a regression between
# two samples is caught too. Replay ids are big-endian positions, sometimes with a zero tail:
# their first 8 bytes compare as the positions do.
CHECKPOINT_AUDIT = """
CREATE TABLE reliability_checkpoint_regressions (
    channel TEXT, old_replay_id BYTEA, new_replay_id BYTEA, new_preset TEXT,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION reliability_checkpoint_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.replay_id IS NOT NULL AND (NEW.replay_id IS NULL
        OR substring(NEW.replay_id FROM 1 FOR 8) < substring(OLD.replay_id FROM 1 FOR 8)) THEN
        INSERT INTO reliability_checkpoint_regressions (channel, old_replay_id, new_replay_id,
            new_preset) VALUES (OLD.channel, OLD.replay_id, NEW.replay_id, NEW.preset);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reliability_checkpoint_audit BEFORE UPDATE ON sfcdc_checkpoints
    FOR EACH ROW EXECUTE FUNCTION reliability_checkpoint_audit();
"""


def checkpoint_position(checkpoint):
    """The position of a checkpoint as `sfcdc channels` shows it (hex), or None for a preset."""
    if isinstance(checkpoint, str) and len(checkpoint) >= 16:
        try:
            return int(checkpoint[:16], 16)
        except ValueError:
            return None
    return None


class ChannelWatch(threading.Thread):
    """Samples `sfcdc channels --format json` back to back (at most every `every` seconds) until
    stopped: no channel's checkpoint may ever move backwards, and no lease generation either.
    The first sample per channel is the baseline."""

    def __init__(self, admin, every=0.2):
        super().__init__(daemon=True)
        self.admin = admin
        self.every = every
        self.stopping = threading.Event()
        self.samples = 0
        self.errors = 0
        self.last_error = None
        self.checkpoints = {}
        self.generations = {}
        self.regressions = []
        self.generation_regressions = []
        self.advances = 0

    def run(self):
        while not self.stopping.is_set():
            t0 = time.time()
            try:
                views = self.admin.channels(timeout=30)
            except (Fail, subprocess.TimeoutExpired, ValueError) as e:
                self.errors += 1
                self.last_error = str(e)[:300]
            else:
                self.check(views)
            self.stopping.wait(max(0.0, self.every - (time.time() - t0)))

    def check(self, views):
        self.samples += 1
        for v in views:
            ch = v["channel"]
            cp = v.get("checkpoint")
            pos = checkpoint_position(cp)
            before = self.checkpoints.get(ch)
            if before is not None and before[0] is not None and (pos is None or pos < before[0]):
                self.regressions.append(
                    f"{ch}: checkpoint {before[1]} -> {cp} (sample {self.samples})"
                )
            if before is not None and pos is not None and before[0] is not None and pos > before[0]:
                self.advances += 1
            if cp is not None:
                self.checkpoints[ch] = (pos, cp)
            g = v.get("generation", 0)
            if g < self.generations.get(ch, 0):
                self.generation_regressions.append(
                    f"{ch}: lease generation {self.generations[ch]} -> {g} (sample {self.samples})"
                )
            self.generations[ch] = g

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)


class Fleet:
    """`FLEET_SIZE` `sfcdc run` processes on one PostgreSQL database, each with its own
    SFCDC_INSTANCE_ID and log, and the lease table read straight from the database."""

    def __init__(self, s, pg, url):
        self.s = s
        self.pg = pg
        self.url = url
        self.members = []
        for i in range(FLEET_SIZE):
            name = f"fleet-{i + 1}"
            extra = {"SFCDC_INSTANCE_ID": name, "SFCDC_LEASE_TTL": f"{FLEET_TTL:g}s"}
            svc = Service(s.ctx.cleanup, s.ctx.binary, s.emu, s.dir, url, extra, name=name)
            svc.paused = False
            self.members.append(svc)

    def start(self):
        for m in self.members:
            m.start()

    def leases(self):
        """The lease rows by channel, with `live` judged by the database's clock."""
        out = self.pg.psql(
            "SELECT channel, coalesce(holder, ''), generation, expires_at, acquired_at, "
            "(extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM sfcdc_leases",
            self.url,
        )
        rows = {}
        for line in out.splitlines():
            ch, holder, gen, expires, acquired, now = line.split("|")
            rows[ch] = {
                "holder": holder or None,
                "generation": int(gen),
                "acquired_at": int(acquired) / 1000.0,
                "live": bool(holder) and int(expires) > int(now),
            }
        return rows

    def keep_alive(self, why):
        """Restarts a member that exited by itself (a finding, noted), as a supervisor would."""
        for m in self.members:
            if not m.paused and not m.alive():
                code = m.proc.returncode
                tail = [ln for ln in m.log_lines()[0][-200:] if " ERROR " in ln][-2:]
                self.s.failures.append(f"{m.name} exited by itself ({why}), code {code}: {tail}")
                m.start()

    def hold(self, seconds, why):
        """Waits, restarting any member that exited by itself."""
        end = time.time() + seconds
        while time.time() < end:
            self.keep_alive(why)
            time.sleep(0.25)

    def close(self):
        for m in self.members:
            if m.alive():
                if m.paused:
                    m.resume()
                m.kill()


def fleet(ctx):
    """Three `sfcdc run` processes on one PostgreSQL database with a short lease TTL, approvals
    arriving throughout, and random hits at random instances and times: SIGKILL (then a
    restart), SIGSTOP (then SIGCONT after a pause longer than the TTL), SIGTERM (then a
    restart). Every channel's checkpoint is watched and must never move backwards; each hit's
    failover is timed; then the fleet drains and the ledger must show nothing lost or
    duplicated."""
    s = Scenario(ctx, "fleet")
    f = None
    watch = None
    try:
        pg = Postgres(ctx.cleanup, ctx.pg_mode, ctx.pg_url, s.dir, restartable=False)
        url = pg.scratch_database("sfcdc_reliability_fleet")
        s.notes.append(
            f"{FLEET_SIZE} instances on PostgreSQL ({ctx.pg_mode}, port {pg.port}), "
            f"SFCDC_LEASE_TTL={FLEET_TTL:g}s"
        )
        s.emu.fulfilment(submit_delay_ms=200, poll_delay_ms=50, sync_rate=0.2)
        f = Fleet(s, pg, url)
        f.start()
        admin = f.members[0]
        s.service = admin  # for the ledger's store reads
        # The first instance migrates the store; then the audit trigger goes on its checkpoints.
        deadline = time.time() + 60
        while pg.psql("SELECT to_regclass('sfcdc_leases') IS NOT NULL", url).strip() != "t":
            if time.time() > deadline:
                raise Fail("the fleet did not create its tables within 60s")
            f.keep_alive("at start-up")
            time.sleep(0.2)
        pg.psql(CHECKPOINT_AUDIT, url)
        s.produce(ctx.interval)
        watch = ChannelWatch(admin)
        watch.start()
        # Every channel held before the first hit.
        deadline = time.time() + 60
        while not all(
            f.leases().get(ch, {}).get("live") for ch in CHANNELS
        ):
            if time.time() > deadline:
                raise Fail("the fleet did not take every channel within 60s")
            f.keep_alive("at start-up")
            time.sleep(0.2)
        f.hold(2, "before the first hit")

        kinds = [HIT_KINDS[i % len(HIT_KINDS)] for i in range(ctx.fleet_hits)]
        s.rng.shuffle(kinds)
        hits = []
        for n, kind in enumerate(kinds):
            f.keep_alive(f"before hit {n + 1}")
            time.sleep(s.rng.uniform(0.5, 3.0))
            victim = s.rng.choice(f.members)
            hits.append(fleet_hit(s, f, n + 1, kind, victim))
        f.hold(2, "after the last hit")

        row = fleet_finish(s, f, watch)
        watch = None
        fleet_results(row, hits, pg, url)
        f = None
        pg.drop_database("sfcdc_reliability_fleet")
        return row
    finally:
        if watch is not None:
            watch.stop()
        if s.producer and s.producer.is_alive():
            s.producer.stopping.set()
        if f is not None:
            f.close()
        s.service = None
        s.close()


def fleet_hit(s, f, n, kind, victim):
    """One hit at `victim`; waits until every channel it held is held by another instance,
    then brings it back (SIGCONT after the pause, or a restart). Returns what happened.

    Failover time: from the signal to the moment another instance acquired the channel's lease
    (the new lease row's `acquired_at`, by the database's clock on this same machine), for each
    channel the victim held when it was hit; a hit's failover is the longest of those."""
    limit = 3 * FLEET_TTL + 10
    before = f.leases()
    held = {
        ch: r["generation"]
        for ch, r in before.items()
        if r["live"] and r["holder"] == victim.name
    }
    pause = s.rng.uniform(FLEET_TTL + 0.5, FLEET_TTL + 3.0) if kind == "SIGSTOP" else None
    t_hit = time.time()
    if kind == "SIGKILL":
        victim.kill()
    elif kind == "SIGSTOP":
        victim.pause()
        victim.paused = True
    else:
        victim.proc.send_signal(signal.SIGTERM)
    taken = {}
    while len(taken) < len(held) and time.time() - t_hit < limit:
        try:
            rows = f.leases()
        except Fail:
            rows = {}
        for ch, g in held.items():
            r = rows.get(ch)
            if ch not in taken and r and r["generation"] > g and r["holder"] not in (None, victim.name):
                taken[ch] = (max(0.0, r["acquired_at"] - t_hit), r["holder"], r["generation"])
        time.sleep(0.03)
    result = {
        "hit": n,
        "kind": kind,
        "instance": victim.name,
        "held": sorted(held),
        "failover_s": max((t for t, _, _ in taken.values()), default=None),
        "taken_by": {ch: {"holder": h, "generation": g, "after_s": round(t, 3)}
                     for ch, (t, h, g) in taken.items()},
        "not_taken": sorted(set(held) - set(taken)),
    }
    for ch in result["not_taken"]:
        s.failures.append(
            f"hit {n} ({kind} {victim.name}): {ch} was not taken over within {limit:.0f}s"
        )
    # Bring the victim back.
    if kind == "SIGSTOP":
        wait = t_hit + pause - time.time()
        if wait > 0:
            time.sleep(wait)
        result["paused_s"] = round(time.time() - t_hit, 2)
        victim.resume()
        victim.paused = False
    elif kind == "SIGTERM":
        try:
            code = victim.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
            victim.kill()
        result["exit"] = code
        if code != 0:
            s.failures.append(f"hit {n}: {victim.name} exited {code} on SIGTERM (expected 0)")
        time.sleep(s.rng.uniform(0.0, 1.0))
        victim.start()
    else:
        time.sleep(s.rng.uniform(0.0, 1.0))
        victim.start()
    fo = result["failover_s"]
    say(
        f"fleet: hit {n}/{s.ctx.fleet_hits} {kind} {victim.name} "
        + (f"holding {', '.join(result['held'])}: failover {fo:.2f}s"
           if held else "(held no channel)")
        + (f", paused {result['paused_s']}s" if pause else "")
    )
    return result


def fleet_finish(s, f, watch):
    """Stops the approvals, lets the fleet drain, stops the checkpoint watch, then stops every
    instance with SIGTERM (each must exit 0) and counts."""
    s.producer.stop()
    f.keep_alive("while draining")
    say("fleet: draining")
    drained, waited, reason = wait_drained(f.members[0], s.emu, s.sf, s.ctx.drain_timeout)
    if not drained:
        s.failures.append(f"not drained after {waited:.0f}s: {reason}")
    else:
        s.notes.append(f"drained in {waited:.0f}s once the hits stopped")
    watch.stop()
    for m in f.members:
        code = m.stop()
        if code != 0:
            s.failures.append(f"{m.name}: the final stop exited {code} on SIGTERM (expected 0)")
    lines = []
    for m in f.members:
        lines += m.log_lines()[0]
    with open(s.emu.log, errors="replace") as fh:
        emulator_lines = fh.read().splitlines()
    for who, log in (("fleet", lines), ("emulator", emulator_lines)):
        panics = [ln for ln in log if "panicked" in ln]
        if panics:
            s.failures.append(f"{len(panics)} panics in the {who} logs, first: {panics[0]}")
    seen = tally(
        lines,
        {
            "takeovers (first)": r"Lease taken; subscribing.*reason=\S*first",
            "takeovers (released)": r"Lease taken; subscribing.*reason=\S*released",
            "takeovers (expired)": r"Lease taken; subscribing.*reason=\S*expired",
            "leases lost": r"Lease lost; standing by",
            "commits refused by the fence": r"no longer held at generation",
            "sessions the server ended (idle in a transaction)": r"idle-in-transaction",
        },
    )
    errors = sum(1 for ln in lines if " ERROR " in ln)
    s.notes.append("the fleet's logs show " + ", ".join(f"{v} {k}" for k, v in seen.items()))
    s.notes.append(
        f"{sum(m.starts for m in f.members)} starts, {errors} ERROR log lines; producer: "
        f"{len(s.producer.approved)} REST approvals, {s.producer.noise} address changes"
    )
    s.notes.append(
        f"checkpoint watch: {watch.samples} samples of sfcdc channels ({watch.errors} failed"
        + (f", last: {watch.last_error}" if watch.errors else "")
        + f"), {watch.advances} advances seen, {len(watch.regressions)} regressions"
    )
    row = ledger(s.name, s.emu, s.sf, f.members[0], drained, s.notes)
    row["failures"] += s.failures
    row["approvals"] = len(s.producer.approved)
    row["regressions"] = list(watch.regressions) + list(watch.generation_regressions)
    row["watch_samples"] = watch.samples
    return row


def fleet_results(row, hits, pg, url):
    """Adds the audited regressions, the failover figures per hit kind and the verdict."""
    audited = pg.psql(
        "SELECT channel, encode(old_replay_id, 'hex'), coalesce(encode(new_replay_id, 'hex'), "
        "new_preset) FROM reliability_checkpoint_regressions ORDER BY at",
        url,
    ).splitlines()
    row["regressions"] += [f"audited write: {ln}" for ln in audited]
    row["checkpoint_regressions"] = len(row["regressions"])
    row["hits"] = hits
    per_kind = {}
    for k in HIT_KINDS:
        times = [h["failover_s"] for h in hits if h["kind"] == k and h["failover_s"] is not None]
        per_kind[k] = {
            "hits": sum(1 for h in hits if h["kind"] == k),
            "failovers": len(times),
            "worst_s": round(max(times), 3) if times else None,
            "median_s": round(statistics.median(times), 3) if times else None,
        }
    row["failover"] = per_kind
    row["lease_ttl_s"] = FLEET_TTL
    row["notes"].append(
        f"{len(hits)} hits ("
        + ", ".join(f"{v['hits']} {k}" for k, v in per_kind.items())
        + f"); checkpoint regressions: {row['checkpoint_regressions']} "
        f"({row['watch_samples']} samples, every write audited by a trigger)"
    )
    row["notes"].append(
        "failover (signal to another instance holding the lease, TTL "
        f"{FLEET_TTL:g}s), worst / median: "
        + "; ".join(
            f"{k} {fmt_s(v['worst_s'])} / {fmt_s(v['median_s'])} over {v['failovers']}"
            for k, v in per_kind.items()
        )
    )
    for h in hits:
        row["details"].append(
            f"hit {h['hit']}: {h['kind']} {h['instance']}"
            + (
                f" holding {', '.join(h['held'])}: "
                + ", ".join(
                    f"{ch} to {t['holder']} (generation {t['generation']}) after {t['after_s']:.2f}s"
                    for ch, t in sorted(h["taken_by"].items())
                )
                if h["held"]
                else ": held no channel"
            )
            + (f"; paused {h['paused_s']}s" if "paused_s" in h else "")
        )
    for r in row["regressions"][:10]:
        row["failures"].append(f"checkpoint moved backwards: {r}")
    if row["checkpoint_regressions"] > 10:
        row["failures"].append(f"... {row['checkpoint_regressions'] - 10} more regressions")
    bad = row["lost"] or row["duplicated"] or not row["drained"] or row["failures"]
    row["verdict"] = "FAIL" if bad else "PASS"


def fmt_s(v):
    return "-" if v is None else f"{v:.2f}s"


ALL = {
    "crash": crash,
    "faults": faults,
    "retention": retention,
    "postgres": postgres,
    "disk": disk,
    "fleet": fleet,
}
