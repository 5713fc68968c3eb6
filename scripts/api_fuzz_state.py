"""Checks that no request answered with an error changed anything (scripts/api-fuzz.sh).

    python3 api_fuzz_state.py BEFORE AFTER HAR AUDIT_BEFORE AUDIT_AFTER

BEFORE and AFTER are snapshots of the store (jobs, deliveries, quarantine, channels); HAR is
schemathesis's record of every request it made in between; AUDIT_* are the audit trail before
and after. Every row that existed before and changed must be the target of a request answered
2xx (new rows are the service's own ingest and recovery, which carry on meanwhile), and the trail
may gain an `ok` entry only for such a request: so a request answered 4xx (an invalid one, or one
refused) changed nothing. Prints what it found; exits 1 on a violation.
"""

import json
import re
import sys


def load_snapshot(path):
    with open(path) as f:
        jobs, deliveries, quarantine, channels = [json.loads(line) for line in f if line.strip()]
    return (
        {j["id"]: j for j in jobs},
        {d["id"]: d for d in deliveries},
        {q["id"]: q for q in quarantine},
        {c: cp for c, cp in channels},
    )


def main():
    before, after, har, audit_before, audit_after = sys.argv[1:6]
    b, a = load_snapshot(before), load_snapshot(after)
    with open(har) as f:
        entries = json.load(f)["log"]["entries"]
    ok = {"jobs": set(), "deliveries": set(), "quarantine": set(), "channels": set()}
    posts_ok = 0
    for e in entries:
        req, status = e["request"], e["response"]["status"]
        if req["method"] != "POST" or not 200 <= status < 300:
            continue
        posts_ok += 1
        path = re.sub(r"^https?://[^/]+", "", req["url"]).split("?")[0]
        m = re.fullmatch(r"/(jobs|deliveries|quarantine)/(\d+)/\w+", path)
        if m:
            ok[m.group(1)].add(int(m.group(2)))
        elif path == "/channels/reset":
            body = json.loads((req.get("postData") or {}).get("text") or "{}")
            ok["channels"].add(body.get("channel"))
    problems = []
    for name, i in (("jobs", 0), ("deliveries", 1), ("quarantine", 2), ("channels", 3)):
        # Rows that existed before and changed or vanished. New rows are the service's own work
        # (ingest and its recoveries carry on meanwhile); no request creates one but a re-drive.
        changed = {k for k in b[i] if b[i][k] != a[i].get(k)}
        unexplained = changed - ok[name]
        if unexplained:
            problems.append(f"{name} changed without a successful request: {sorted(unexplained, key=str)}")
        if not unexplained:
            print(f"  {name}: {len(changed)} changed, each by a request answered 2xx")
    with open(audit_before) as f:
        known = {x["id"] for x in json.load(f)}
    with open(audit_after) as f:
        added = [x for x in json.load(f) if x["id"] not in known]
    ok_entries = sum(1 for x in added if x["outcome"] == "ok")
    refused = sum(1 for x in added if x["outcome"] != "ok")
    print(f"  audit: {ok_entries} actions went through, {refused} refused; {posts_ok} POSTs answered 2xx")
    if ok_entries != posts_ok:
        problems.append(f"{ok_entries} audited actions went through, but {posts_ok} POSTs were answered 2xx")
    for p in problems:
        print("  FAILED: " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
