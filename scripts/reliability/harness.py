"""The pieces the reliability scenarios are built from: child processes that are always cleaned
up, the emulator and its control API, a small Salesforce REST client, `sfcdc run`, the store read
through the admin commands, PostgreSQL control, and the ledger.

Python 3 standard library only.
"""

import json
import os
import re
import signal
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

API = "/services/data/v60.0"
CHANNELS = [
    "/data/OrderChangeEvent",
    "/data/OrderItemChangeEvent",
    "/event/Order_Fulfilment_Requested__e",
]
OPEN_STATES = {"available", "running", "polling", "retryable"}


class Fail(Exception):
    """The harness itself could not do what a scenario asked (not a finding about sfcdc)."""


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cleanup:
    """Everything to undo at exit, whatever happens: child processes (killed by their own pid,
    never by name), then registered undo steps in reverse order (unmounts, starting a stopped
    PostgreSQL, dropping the scratch database). The shell wrapper repeats the process and mount
    part from the files written here if this interpreter itself dies."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []
        self.undo = []
        self.lock = threading.Lock()

    def spawn(self, args, env, log_path, stdout_path=None):
        log = open(log_path, "ab")
        out = open(stdout_path, "ab") if stdout_path else log
        p = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log,
            start_new_session=True,
        )
        with self.lock:
            self.procs.append(p)
        with open(os.path.join(self.workdir, "pids"), "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def on_exit(self, what, fn):
        """Registers `fn` to run at exit (LIFO); returns a handle for `done`."""
        entry = [what, fn]
        with self.lock:
            self.undo.append(entry)
        return entry

    def done(self, entry):
        """Runs a registered undo step now and forgets it."""
        with self.lock:
            if entry in self.undo:
                self.undo.remove(entry)
        entry[1]()

    def run(self):
        with self.lock:
            procs, self.procs = self.procs, []
            undo, self.undo = self.undo, []
        for p in procs:
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(timeout=10)
                except Exception as e:  # noqa: BLE001 - best effort at exit
                    say(f"cleanup: could not kill pid {p.pid}: {e}")
        for what, fn in reversed(undo):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                say(f"cleanup: {what} failed: {e}")


def base_env():
    """A clean environment: nothing of the caller's SFCDC_* or SF_* settings leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "TZ")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["SFCDC_LOG_FORMAT"] = "text"
    env["NO_COLOR"] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# The emulator


class Emulator:
    """`sfcdc emulator` on ephemeral loopback ports, TLS from its own CA."""

    def __init__(self, cleanup, binary, workdir, seed, latency_ms=1500, steps=4):
        self.dir = workdir
        self.ca = os.path.join(workdir, "ca.pem")
        self.log = os.path.join(workdir, "emulator.log")
        out = os.path.join(workdir, "emulator.out")
        args = [
            binary, "emulator",
            "--grpc-addr", "127.0.0.1:0",
            "--rest-addr", "127.0.0.1:0",
            "--ca-out", self.ca,
            "--seed", str(seed),
            "--keepalive", "1s",
            "--fulfilment-latency", f"{latency_ms}ms",
            "--fulfilment-progress-steps", str(steps),
        ]
        env = base_env()
        env["SFCDC_LOG"] = "info"
        self.proc = cleanup.spawn(args, env, self.log, stdout_path=out)
        deadline = time.time() + 60
        ready = None
        while time.time() < deadline and ready is None:
            if self.proc.poll() is not None:
                raise Fail(f"the emulator exited with {self.proc.returncode}; see {self.log}")
            try:
                with open(out) as f:
                    ready = re.search(r"ready: grpc=(\S+) rest=(\S+)", f.read())
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        if ready is None:
            raise Fail("the emulator did not say it was ready within 60s")
        self.grpc, self.rest = ready.group(1), ready.group(2)
        self.ctx = ssl.create_default_context(cafile=self.ca)

    def http(self, method, path, body=None, token=None, form=None, timeout=15):
        """One request; returns (status, parsed JSON or None). Raises OSError on transport
        errors."""
        headers = {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.rest + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            return status, raw.decode(errors="replace")

    def control(self, method, path, body=None):
        """A control API call (no auth); anything but 2xx is a harness failure."""
        for attempt in range(5):
            try:
                status, resp = self.http(method, path, body=body)
                break
            except OSError as e:
                if attempt == 4:
                    raise Fail(f"{method} {path}: {e}") from e
                time.sleep(0.2)
        if not 200 <= status < 300:
            raise Fail(f"{method} {path}: {status} {resp}")
        return resp

    def fault(self, **fault):
        return self.control("POST", "/emulator/faults", fault)

    def fulfilment(self, **patch):
        return self.control("PUT", "/emulator/fulfilment", patch)

    def fulfilment_stats(self):
        return self.control("GET", "/emulator/fulfilment")["stats"]

    def operations(self):
        return self.control("GET", "/emulator/fulfilment/operations")

    def stats(self):
        return self.control("GET", "/emulator/stats")


class Salesforce:
    """A REST client of the emulated org that rides out the faults the suite injects: a 401
    (expired token) logs in again, a 503 (`rest-unavailable`, which performs nothing) and
    transport errors are retried."""

    def __init__(self, emu):
        self.emu = emu
        self.token = None
        self.refused = 0
        self.relogins = 0

    def login(self):
        status, body = self.emu.http(
            "POST",
            "/services/oauth2/token",
            form={
                "grant_type": "client_credentials",
                "client_id": "sfcdc-demo",
                "client_secret": "sfcdc-demo-secret",
            },
        )
        if status != 200:
            raise Fail(f"login: {status} {body}")
        self.token = body["access_token"]

    def call(self, method, path, body=None, patience=60):
        deadline = time.time() + patience
        while True:
            if time.time() > deadline:
                raise Fail(f"{method} {path}: no success within {patience}s")
            try:
                if self.token is None:
                    self.login()
                status, resp = self.emu.http(method, API + path, body=body, token=self.token)
            except OSError:
                time.sleep(0.1)
                continue
            if status == 401:
                self.token = None
                self.relogins += 1
                continue
            if status == 503:
                self.refused += 1
                time.sleep(0.05)
                continue
            if 200 <= status < 300:
                return resp
            raise Fail(f"{method} {path}: {status} {resp}")

    def query(self, soql):
        resp = self.call("GET", "/query?" + urllib.parse.urlencode({"q": soql}))
        records = list(resp["records"])
        while not resp.get("done", True) and resp.get("nextRecordsUrl"):
            path = resp["nextRecordsUrl"]
            path = path[len(API):] if path.startswith(API) else path
            resp = self.call("GET", path)
            records.extend(resp["records"])
        return records


class Producer(threading.Thread):
    """Makes order approvals through REST while a scenario runs: each step creates a Draft order
    and approves it (one approval, so one job expected), and every third step also changes an
    earlier order's billing address (noise that must make no job). `lock` is held around each
    step, so a fault that must not hit an approval (corrupt-next) can be injected and used up
    between steps."""

    def __init__(self, sf, rng, interval):
        super().__init__(daemon=True)
        self.sf = sf
        self.rng = rng
        self.interval = interval
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.approved = []
        self.created = 0
        self.noise = 0
        self.error = None
        self.account = None

    def run(self):
        try:
            self.account = self.sf.query("SELECT Id FROM Account LIMIT 1")[0]["Id"]
            n = 0
            while not self.stopping.is_set():
                with self.lock:
                    self.step(n)
                n += 1
                self.stopping.wait(self.interval * self.rng.uniform(0.5, 1.5))
        except Exception as e:  # noqa: BLE001 - reported by the scenario
            self.error = e

    def step(self, n):
        resp = self.sf.call(
            "POST",
            "/sobjects/Order",
            {
                "AccountId": self.account,
                "EffectiveDate": "2024-06-01",
                "Status": "Draft",
                "Name": f"Reliability order {n}",
            },
        )
        self.created += 1
        order = resp["id"]
        self.sf.call("PATCH", f"/sobjects/Order/{order}", {"Status": "Approved"})
        self.approved.append(order)
        if n % 3 == 2:
            self.touch(self.rng.choice(self.approved))

    def touch(self, order):
        """One more Order change event that is not an approval."""
        street = f"{self.rng.randrange(1, 400)} High Street"
        self.sf.call("PATCH", f"/sobjects/Order/{order}", {"BillingStreet": street})
        self.noise += 1

    def stop(self):
        self.stopping.set()
        self.join(timeout=120)
        if self.error:
            raise Fail(f"the producer failed: {self.error}")


# ---------------------------------------------------------------------------------------------
# The service and its store


class Service:
    """`sfcdc run` as a separate process, against `emu`, with quick retries and polls so a
    scenario finishes in seconds, and `SFCDC_MAX_ATTEMPTS` high enough that a storm delays jobs
    rather than dead-lettering them."""

    def __init__(self, cleanup, binary, emu, workdir, db_url, extra=None, name="service"):
        self.cleanup = cleanup
        self.binary = binary
        self.name = name
        self.log = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.starts = 0
        env = base_env()
        env.update(
            {
                "SFCDC_PUBSUB_ENDPOINT": emu.grpc,
                "SFCDC_CA_CERT": emu.ca,
                "SF_AUTH": "client-credentials",
                "SF_LOGIN_URL": emu.rest,
                "SF_CLIENT_ID": "sfcdc-demo",
                "SF_CLIENT_SECRET": "sfcdc-demo-secret",
                "SFCDC_CHANNELS": ",".join(CHANNELS),
                "SFCDC_REPLAY_PRESET": "earliest",
                "SFCDC_RECONNECT_MIN": "50ms",
                "SFCDC_RECONNECT_MAX": "1s",
                "SFCDC_DATABASE_URL": db_url,
                "SFCDC_LOG": "info",
                "SFCDC_ADMIN_ADDR": "127.0.0.1:0",
                "SFCDC_FULFILMENT_URL": emu.rest + "/fulfilment",
                "SFCDC_FULFILMENT_TOKEN": "fulfilment-dev-token",
                "SFCDC_POLL_INTERVAL": "100ms",
                "SFCDC_POLL_MAX_INTERVAL": "500ms",
                "SFCDC_RETRY_BASE": "100ms",
                "SFCDC_RETRY_MAX": "1s",
                "SFCDC_MAX_ATTEMPTS": "100",
                "SFCDC_WORKER_IDLE_POLL": "100ms",
                "SFCDC_HTTP_TIMEOUT": "2s",
                "SFCDC_JOB_LEASE": "8s",
            }
        )
        env.update(extra or {})
        self.env = env
        self.admin_env = {**base_env(), "SFCDC_DATABASE_URL": db_url, "SFCDC_LOG": "error"}

    def start(self):
        self.starts += 1
        with open(self.log, "a") as f:
            f.write(f"==== reliability suite: start #{self.starts} at {time.strftime('%H:%M:%S')}\n")
        self.proc = self.cleanup.spawn([self.binary, "run"], self.env, self.log)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash or the OOM killer would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def pause(self):
        """SIGSTOP: the process is frozen (a long GC pause, a stalled VM) but keeps its sockets."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after `pause`."""
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout=60):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def admin(self, *args, timeout=60):
        r = subprocess.run(
            [self.binary, *args],
            env=self.admin_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise Fail(f"sfcdc {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def jobs(self):
        return self.admin("jobs", "list", "--format", "json", "--limit", "10000000")

    def checkpoints(self):
        return self.admin("checkpoints", "list", "--format", "json")

    def quarantined(self):
        return self.admin("quarantine", "list", "--all", "--format", "json")

    def channels(self, timeout=60):
        """`sfcdc channels --format json`: each channel's holder, generation and checkpoint."""
        return self.admin("channels", "--format", "json", timeout=timeout)

    def log_lines(self, since=0):
        """Lines of the service log from byte offset `since`, and the new offset."""
        with open(self.log, "rb") as f:
            f.seek(since)
            data = f.read()
        return data.decode(errors="replace").splitlines(), since + len(data)

    def log_size(self):
        return os.path.getsize(self.log) if os.path.exists(self.log) else 0


def replay_hex(position):
    """The replay id (hex) of a stored checkpoint position, or None."""
    if not isinstance(position, dict) or position.get("kind") != "after":
        return None
    r = position.get("replay_id")
    if isinstance(r, str):
        return r
    if isinstance(r, list):
        return bytes(r).hex()
    return None


def caught_up(service, emu):
    """Whether every channel's checkpoint has reached the last event the emulator holds."""
    stored = {c["channel"]: replay_hex(c["position"]) for c in service.checkpoints()}
    last = emu.stats().get("last_replay_ids", {})
    for ch in CHANNELS:
        if ch not in last:
            continue
        got = stored.get(ch)
        # Replay ids are big-endian positions (8 bytes, sometimes 10 with a zero tail).
        if got is None or int(got[:16], 16) < int(last[ch][:16], 16):
            return False
    return True


def approved_orders(sf):
    return {
        r["Id"]: r
        for r in sf.query(
            "SELECT Id, Status, Activation_Status__c, WHMCS_Order_ID__c FROM Order "
            "WHERE Status = 'Approved'"
        )
    }


def wait_drained(service, emu, sf, timeout):
    """Waits until every approval has a job, no job is open, and every channel is caught up
    (twice in a row). Returns (drained, seconds waited, last reason)."""
    start = time.time()
    calm = 0
    reason = "not checked"
    while time.time() - start < timeout:
        try:
            jobs = service.jobs()
            approved = approved_orders(sf)
            with_job = {j["order_id"] for j in jobs}
            open_jobs = [j for j in jobs if j["state"] in OPEN_STATES]
            missing = set(approved) - with_job
            if missing:
                reason = f"{len(missing)} approvals without a job"
            elif open_jobs:
                reason = f"{len(open_jobs)} open jobs"
            elif not caught_up(service, emu):
                reason = "checkpoints behind the emulator"
            else:
                reason = "drained"
            calm = calm + 1 if reason == "drained" else 0
            if calm >= 2:
                return True, time.time() - start, reason
        except Fail as e:
            reason = str(e)
            calm = 0
        time.sleep(1)
    return False, time.time() - start, reason


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """Stops and starts the PostgreSQL server behind `url`.

    `system` mode acts on the machine's own server: the Debian cluster listening on the URL's
    port (`pg_ctlcluster VERSION NAME stop|start`), else `service postgresql stop|start`.
    `private` mode creates a throwaway cluster under the work directory (initdb as the
    postgres user, a free port on 127.0.0.1), so other users of the shared server see nothing.

    With `restartable=False` (a scenario that only needs a scratch database) the system
    server is never stopped, so no way to restart it is looked for."""

    def __init__(self, cleanup, mode, url, workdir, restartable=True):
        self.cleanup = cleanup
        self.mode = mode
        self.drops = {}
        if mode == "private":
            self._init_private(workdir)
        else:
            self.admin_url = url
            u = urllib.parse.urlparse(url)
            self.host, self.port = u.hostname or "127.0.0.1", u.port or 5432
            if self.host not in ("127.0.0.1", "localhost", "::1"):
                raise Fail(f"{self.host} is not this machine: use --pg private, or a local URL")
            if restartable:
                self.stop_cmd, self.start_cmd = self._system_commands()
            else:
                self.stop_cmd = self.start_cmd = None
            self.cleanup.on_exit("leave PostgreSQL running", self.ensure_up)
        if mode == "private":
            self.how = "pg_ctl -m fast stop / pg_ctl start, as postgres, on a cluster of its own (initdb)"
        elif restartable:
            self.how = " / ".join(" ".join(c) for c in (self.stop_cmd, self.start_cmd))
        else:
            self.how = "never (the machine's server, not restarted)"

    def _system_commands(self):
        if shutil.which("pg_lsclusters") and shutil.which("pg_ctlcluster"):
            out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                f = line.split()
                if len(f) >= 3 and f[2] == str(self.port):
                    return (
                        ["pg_ctlcluster", f[0], f[1], "stop", "-m", "fast"],
                        ["pg_ctlcluster", f[0], f[1], "start"],
                    )
        if shutil.which("service"):
            return ["service", "postgresql", "stop"], ["service", "postgresql", "start"]
        raise Fail("found no way to restart PostgreSQL (pg_ctlcluster or service)")

    def _init_private(self, workdir):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True
        ).stdout.strip() or "/usr/lib/postgresql/15/bin"
        # The server runs as postgres: it must reach its directory.
        for d in (self.cleanup.workdir, workdir):
            os.chmod(d, 0o755)
        root = os.path.join(workdir, "pg")
        data = os.path.join(root, "data")
        os.makedirs(root)
        shutil.chown(root, "postgres", "postgres")
        self.port = free_port()
        self.host = "127.0.0.1"
        as_pg = ["runuser", "-u", "postgres", "--"]
        r = subprocess.run(
            [*as_pg, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise Fail(f"initdb failed: {r.stderr}")
        opts = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1"
        log = os.path.join(root, "postgres.log")
        self.stop_cmd = [*as_pg, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]
        self.start_cmd = [*as_pg, f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", "start"]
        self.admin_url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.cleanup.on_exit("stop the private PostgreSQL", self._stop_private)
        self.start()

    def _stop_private(self):
        if self.is_up():
            subprocess.run(self.stop_cmd, capture_output=True, timeout=60)

    def is_up(self):
        return subprocess.run(
            ["pg_isready", "-q", "-h", self.host, "-p", str(self.port)], timeout=10
        ).returncode == 0

    def stop(self):
        r = subprocess.run(self.stop_cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise Fail(f"{' '.join(self.stop_cmd)}: {r.stderr.strip()}")
        if self.mode == "system":
            # For the shell wrapper, should this interpreter die before starting it again.
            with open(os.path.join(self.cleanup.workdir, "pg-stopped"), "w") as f:
                f.write(" ".join(self.start_cmd) + "\n")

    def start(self):
        r = subprocess.run(self.start_cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise Fail(f"{' '.join(self.start_cmd)}: {r.stderr.strip()}")
        deadline = time.time() + 60
        while not self.is_up():
            if time.time() > deadline:
                raise Fail("PostgreSQL did not come back within 60s")
            time.sleep(0.2)
        try:
            os.remove(os.path.join(self.cleanup.workdir, "pg-stopped"))
        except FileNotFoundError:
            pass

    def ensure_up(self):
        if self.start_cmd is None:
            return
        if not self.is_up():
            say("cleanup: PostgreSQL is down; starting it again")
            self.start()

    def psql(self, sql, url=None):
        """Runs `sql` on `url` (default: the server's admin database); returns its output
        (unaligned, tuples only, `|` between fields)."""
        r = subprocess.run(
            ["psql", url or self.admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise Fail(f"psql {sql!r}: {r.stderr.strip()}")
        return r.stdout

    def scratch_database(self, name):
        """Creates database `name` afresh and drops it at exit (or at `drop_database`); returns
        its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        marker = os.path.join(self.cleanup.workdir, "pg-scratch")
        line = f"{self.admin_url} {name}\n"
        if self.mode == "system":
            # For the shell wrapper, should this interpreter die before dropping it: one line
            # per scratch database.
            with open(marker, "a") as f:
                f.write(line)
        self.psql(f'CREATE DATABASE "{name}"')

        def drop():
            self.ensure_up()
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if os.path.exists(marker):
                with open(marker) as f:
                    rest = [ln for ln in f if ln != line]
                if rest:
                    with open(marker, "w") as f:
                        f.writelines(rest)
                else:
                    os.remove(marker)

        self.drops[name] = self.cleanup.on_exit(f"drop database {name}", drop)
        u = urllib.parse.urlparse(self.admin_url)
        return urllib.parse.urlunparse(u._replace(path="/" + name))

    def drop_database(self, name):
        """Drops a scratch database now (its processes must have stopped)."""
        entry = self.drops.pop(name, None)
        if entry is not None:
            self.cleanup.done(entry)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The ledger


def ledger(name, emu, sf, service, drained, notes):
    """Counts, from the emulator's state and the store, what a scenario produced and what
    became of it. `lost` is an approval without a completed job whose external id was written
    back to the order; `duplicated` is every job beyond the first for an approval (or a job for
    an order that was never approved) plus every fulfilment operation beyond the first for an
    order or a job key."""
    stats = emu.stats()
    events = sum(stats["events_retained"].get(ch, 0) for ch in CHANNELS)
    approved = approved_orders(sf)
    jobs = service.jobs()
    ops = emu.operations()
    jobs_by_order, ops_by_order, ops_by_key = {}, {}, {}
    for j in jobs:
        jobs_by_order.setdefault(j["order_id"], []).append(j)
    for o in ops:
        ops_by_order.setdefault(o["order_id"], []).append(o)
        ops_by_key.setdefault(o["idempotency_key"].split("/")[0], []).append(o)

    lost = []
    for oid, order in approved.items():
        done = [j for j in jobs_by_order.get(oid, []) if j["state"] == "completed"]
        if not (
            done
            and order.get("Activation_Status__c") == "Activated"
            and order.get("WHMCS_Order_ID__c") == done[0].get("external_id")
        ):
            states = [(j["id"], j["state"], j.get("last_error")) for j in jobs_by_order.get(oid, [])]
            lost.append(
                f"{oid} (activation {order.get('Activation_Status__c')}, external id "
                f"{order.get('WHMCS_Order_ID__c')}): jobs {states}"
            )
    dup_jobs = sum(len(v) - 1 for k, v in jobs_by_order.items() if k in approved and len(v) > 1)
    stray = [k for k in jobs_by_order if k not in approved]
    dup_jobs += sum(len(jobs_by_order[k]) for k in stray)
    dup_ops = max(
        sum(len(v) - 1 for v in ops_by_order.values()),
        sum(len(v) - 1 for v in ops_by_key.values()),
    )
    resubmits = sum(o["submissions"] - 1 for o in ops)
    details = []
    details += [f"lost: {x}" for x in lost[:10]]
    details += [
        f"duplicate jobs for {k}: {[(j['id'], j['state'], j['key']) for j in v]}"
        for k, v in jobs_by_order.items()
        if len(v) > 1 or k not in approved
    ][:10]
    details += [
        f"duplicate operations for {k}: {[(o['operation_id'], o['idempotency_key']) for o in v]}"
        for k, v in ops_by_order.items()
        if len(v) > 1
    ][:10]
    return {
        "scenario": name,
        "events": events,
        "expected": len(approved),
        "created": len(jobs),
        "completed": sum(1 for j in jobs if j["state"] == "completed"),
        "lost": len(lost),
        "duplicated": dup_jobs + dup_ops,
        "dup_jobs": dup_jobs,
        "dup_ops": dup_ops,
        "operations": len(ops),
        "resubmits": resubmits,
        "drained": drained,
        "notes": notes,
        "details": details,
        "failures": [],
    }


def print_ledger(rows):
    cols = [
        ("scenario", "scenario"),
        ("events", "events produced"),
        ("expected", "jobs expected"),
        ("created", "jobs created"),
        ("completed", "completed"),
        ("lost", "jobs lost"),
        ("duplicated", "jobs duplicated"),
        ("operations", "fulfilment ops"),
        ("resubmits", "same-key resubmits"),
        ("drained", "drained"),
        ("verdict", "verdict"),
    ]
    total = {"scenario": "total", "drained": all(r["drained"] for r in rows)}
    for k in ("events", "expected", "created", "completed", "lost", "duplicated", "operations",
              "resubmits"):
        total[k] = sum(r[k] for r in rows)
    total["verdict"] = "PASS" if all(r["verdict"] == "PASS" for r in rows) else "FAIL"
    table = [[h for _, h in cols]]
    for r in [*rows, total]:
        table.append(
            ["yes" if r[k] is True else "NO" if r[k] is False else str(r[k]) for k, _ in cols]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print("Reliability ledger")
    print(line)
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        print(" " + " | ".join(cells))
        if i == 0 or i == len(table) - 2:
            print(line)
    print(line)
    for r in rows:
        if "failover" in r:
            print_fleet(r)
    for r in rows:
        for n in r["notes"]:
            print(f"  {r['scenario']}: {n}")
        for f in r["failures"]:
            print(f"  {r['scenario']}: FAILURE: {f}")
        for d in r["details"]:
            print(f"  {r['scenario']}: {d}")


def print_fleet(r):
    """The fleet scenario's own ledger: approvals against jobs, checkpoint regressions, and the
    worst failover per kind of hit."""
    fo = r["failover"]
    print()
    print(
        f"Fleet ledger ({r['scenario']}): {len(r['hits'])} hits, lease TTL {r['lease_ttl_s']:g}s"
    )
    for label, value in (
        ("approvals made", r["approvals"]),
        ("jobs expected", r["expected"]),
        ("jobs created", r["created"]),
        ("jobs lost", r["lost"]),
        ("jobs duplicated", r["duplicated"]),
        ("checkpoint regressions", r["checkpoint_regressions"]),
    ):
        print(f"  {label:<24} {value}")
    for kind, v in fo.items():
        worst = "-" if v["worst_s"] is None else f"{v['worst_s']:.2f}s"
        median = "-" if v["median_s"] is None else f"{v['median_s']:.2f}s"
        print(
            f"  worst failover, {kind:<8} {worst:>7}  (median {median}; {v['hits']} hits, "
            f"{v['failovers']} of a holder)"
        )
