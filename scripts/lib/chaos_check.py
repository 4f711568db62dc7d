#!/usr/bin/env python3
"""The checks of scripts/chaos.sh (python3 stdlib only).

    chaos_check.py converge ID=URL... --label L --since T --timeout S --log FILE [--final]
        Polls every node's /debug/state every 200 ms until all answer, all are
        ready and all digests are equal; prints and logs (JSON line) how long
        that took since T (epoch seconds, e.g. the heal). Exit 1 on timeout.
        --final then also waits until the state stops changing (pending
        riders and drivers may still be matched after the bot stopped) and
        every node's match log holds as many matches.

    chaos_check.py snapshot ID=URL... --store FILE
        Adds every node's /matches (at most 1000, newest first) to FILE, so
        that matches are checked even when more than 1000 were committed in
        all: chaos.sh takes a snapshot every few seconds. A listing that is
        full and whose oldest match was not seen before may have hidden
        older ones: that is recorded as a gap.

    chaos_check.py check ID=URL... --store FILE --record told.jsonl
            --bot-summary FILE --convergence FILE --partitions FILE
            --regions DIR --limit S [--restarted ID...]
        Takes a last snapshot and checks: no rider or driver in two matches
        (per node, and across all nodes); every match the bot was told of is
        committed with the same driver; every node ready with one digest,
        within --limit of the last heal; equal pending counts; and accepted
        requests = 2 x matches + pending (+ expired), from the bot's summary.
        Prints the report; exit 1 on any violation.
"""

import argparse
import json
import os
import sys
import time
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mesh  # noqa: E402  (scripts/lib/mesh.py)

MATCHES_PATH = "/matches?limit=1000000"
LISTING_CAP = 1000  # the node answers at most this many (MAX_MATCHES_LISTED)
POLL = 0.2
QUIET = 2.5  # seconds without a change: over two matcher rounds (1 s each)


# --- convergence ---------------------------------------------------------------


def converged(states):
    return (
        all(s is not None for s in states)
        and all(s["ready"] for s in states)
        and len({s["digest"] for s in states}) == 1
    )


def cmd_converge(args):
    nodes = mesh.parse_nodes(args.nodes)
    deadline = args.since + args.timeout
    states = []
    ok = False
    while True:
        states = mesh.fetch_all(nodes, "/debug/state", timeout=1.0)
        if converged(states):
            ok = True
            break
        if time.time() >= deadline:
            break
        time.sleep(POLL)
    seconds = time.time() - args.since
    entry = {"label": args.label, "converged": ok, "seconds": round(seconds, 3)}
    if ok:
        entry["digest"] = states[0]["digest"]
    if ok and args.final:
        # Nothing new arrives any more, but pending riders and drivers may
        # still be matched (claims take a round trip): wait until the digest
        # has not changed for QUIET seconds and every match log caught up,
        # so that the check looks at a settled mesh.
        digest, changed = states[0]["digest"], time.time()
        give_up = changed + args.timeout
        settled = False
        while time.time() < give_up:
            time.sleep(POLL)
            states = mesh.fetch_all(nodes, "/debug/state", timeout=1.0)
            same = converged(states) and states[0]["digest"] == digest
            # A restarted node's match log holds only the commits its
            # documents still hold: matches whose documents were dropped
            # while it was down are not coming back, so its count is not
            # compared.
            logs = {s["committed_matches"] for (n, _), s in zip(nodes, states)
                    if n not in args.restarted}
            if same and len(logs) <= 1:
                if time.time() - changed >= QUIET:
                    settled = True
                    break
                continue
            if converged(states):
                digest = states[0]["digest"]
            changed = time.time()
        entry["settled"] = settled
        entry["settled_after"] = round(changed - args.since, 3)
    entry["states"] = {n: s for (n, _), s in zip(nodes, states)}
    with open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")
    if ok:
        print("  converged %.2f s after %s (digest %s)" % (seconds, args.label, entry["digest"]))
        return 0
    print("  NOT converged %.1f s after %s:" % (seconds, args.label))
    for (n, _), s in zip(nodes, states):
        print("    %-18s %s" % (n, "no answer" if s is None else "digest %s ready %s" % (s["digest"], s["ready"])))
    return 1


# --- match snapshots -------------------------------------------------------------


def load_store(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"nodes": {}, "gaps": [], "listing_duplicates": [], "snapshots": 0}


def add_snapshot(store, nodes):
    listings = mesh.fetch_all(nodes, MATCHES_PATH, timeout=5.0)
    for (node, _), listing in zip(nodes, listings):
        if listing is None:
            continue  # down (e.g. killed on purpose); the next snapshot sees it
        seen = store["nodes"].setdefault(node, {})
        matches = listing["matches"]
        if len(matches) >= LISTING_CAP and pair_key(matches[-1]) not in seen:
            store["gaps"].append({"node": node, "at": time.time(), "oldest": matches[-1]})
        riders, drivers = {}, {}
        for m in matches:
            for role, index in (("rider_id", riders), ("driver_id", drivers)):
                if m[role] in index and index[m[role]] != pair_key(m):
                    store["listing_duplicates"].append({"node": node, "role": role, "a": index[m[role]], "b": m})
                index[m[role]] = pair_key(m)
            seen.setdefault(pair_key(m), m)
    store["snapshots"] += 1
    return listings


def pair_key(m):
    return m["rider_id"] + "/" + m["driver_id"]


def save_store(store, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(store, f)
    os.replace(tmp, path)


def cmd_snapshot(args):
    store = load_store(args.store)
    add_snapshot(store, mesh.parse_nodes(args.nodes))
    save_store(store, args.store)
    return 0


# --- the final check ---------------------------------------------------------------


def read_jsonl(path):
    out = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def endpoint_region(endpoint, regions):
    """Region whose mesh http address the bot's endpoint URL names."""
    hostport = endpoint.split("://", 1)[-1].split("/", 1)[0]
    for r in regions:
        if r["http"] == hostport:
            return r["id"]
    return None


def cmd_check(args):
    nodes = mesh.parse_nodes(args.nodes)
    regions = mesh.load_regions(args.regions)
    violations = []
    notes = []

    def violation(text):
        violations.append(text)

    # A last look at every node, all at once.
    store = load_store(args.store)
    add_snapshot(store, nodes)
    save_store(store, args.store)
    states = mesh.fetch_all(nodes, "/debug/state")
    metrics = mesh.fetch_all(nodes, "/metrics", parse=mesh.get)
    summary = json.load(open(args.bot_summary)) if os.path.exists(args.bot_summary) else None
    told = [line for line in read_jsonl(args.record) if line.get("message", {}).get("type") == "match"]
    convergence = read_jsonl(args.convergence)
    partitions = read_jsonl(args.partitions)

    # 1. Nobody in two committed matches: per node, then across all nodes.
    for d in store["listing_duplicates"]:
        violation("node %s listed %s %s in two matches: %s and %s" % (d["node"], d["role"], d["b"][d["role"]], d["a"], pair_key(d["b"])))
    union_by_rider = defaultdict(set)
    union_by_driver = defaultdict(set)
    union = {}
    for node, seen in store["nodes"].items():
        by_rider, by_driver = defaultdict(set), defaultdict(set)
        for key, m in seen.items():
            by_rider[m["rider_id"]].add(m["driver_id"])
            by_driver[m["driver_id"]].add(m["rider_id"])
            union_by_rider[m["rider_id"]].add(m["driver_id"])
            union_by_driver[m["driver_id"]].add(m["rider_id"])
            union.setdefault(key, m)
        for rider, ds in by_rider.items():
            if len(ds) > 1:
                violation("node %s: rider %s committed with drivers %s" % (node, rider, sorted(ds)))
        for driver, rs in by_driver.items():
            if len(rs) > 1:
                violation("node %s: driver %s committed with riders %s" % (node, driver, sorted(rs)))
    for rider, ds in union_by_rider.items():
        if len(ds) > 1:
            violation("rider %s matched to different drivers on different nodes: %s" % (rider, sorted(ds)))
    for driver, rs in union_by_driver.items():
        if len(rs) > 1:
            violation("driver %s matched to different riders on different nodes: %s" % (driver, sorted(rs)))
    for g in store["gaps"]:
        violation(
            "node %s: a /matches listing was full (%d) and older matches may have been missed; "
            "snapshot more often" % (g["node"], LISTING_CAP)
        )
    # A match only some nodes list, after convergence, is a replication hole.
    answering = [n for (n, _), s in zip(nodes, states) if s is not None]
    for key in union:
        missing = [n for n in answering if key not in store["nodes"].get(n, {})]
        if missing:
            violation("match %s is missing on %s" % (key, ", ".join(missing)))

    # 2. Everything the bot was told is committed, with the same driver.
    told_by_rider = {}
    for line in told:
        m = line["message"]
        if union_by_rider.get(m["rider_id"]) != {m["driver_id"]}:
            violation(
                "bot was told rider %s got driver %s (via %s), but the nodes committed %s"
                % (m["rider_id"], m["driver_id"], line["endpoint"], sorted(union_by_rider.get(m["rider_id"], [])) or "nothing")
            )
        told_by_rider.setdefault(m["rider_id"], []).append(line)

    # 3. Convergence: after every heal within the limit; all ready, one digest.
    for c in convergence:
        if not c["converged"]:
            violation("no convergence within %.1f s after %s" % (c["seconds"], c["label"]))
    final = [c for c in convergence if c["label"].startswith("final")]
    if not final:
        violation("no final convergence was measured")
    elif final[-1]["converged"] and final[-1]["seconds"] > args.limit:
        violation("converged %.2f s after the last heal, over the %.0f s limit" % (final[-1]["seconds"], args.limit))
    elif final[-1]["converged"] and not final[-1].get("settled"):
        violation("the replicated state kept changing for %.0f s after the bot stopped" % args.limit)
    if any(s is None for s in states):
        violation("nodes not answering at the end: %s" % [n for (n, _), s in zip(nodes, states) if s is None])
    live = [s for s in states if s is not None]
    if live and not converged(states):
        violation("digests differ at the end: %s" % {s["node"]: (s["digest"], s["ready"]) for s in live})

    # 4. No accepted request lost: nodes agree on what is pending, and the
    # bot's accepted requests are all matched, pending or expired.
    pending = {(s["pending_riders"], s["pending_drivers"]) for s in live}
    if len(pending) > 1:
        violation("nodes disagree on pending counts: %s" % {s["node"]: (s["pending_riders"], s["pending_drivers"]) for s in live})
    pending_riders, pending_drivers = (sorted(pending)[0] if pending else (0, 0))
    n_matches = len(union)
    accounting = {}
    if summary is None:
        violation("no bot summary at %s" % args.bot_summary)
    else:
        req, mt = summary["requests"], summary["matches"]
        expired = mt["expired_riders"] + mt["expired_drivers"]
        accounted = 2 * n_matches + pending_riders + pending_drivers + expired
        outstanding = req["accepted"] - mt["received"] - mt["driver_notices"] - expired
        accounting = {
            "accepted": req["accepted"],
            "accounted": accounted,
            "transport_errors": req["transport_errors"],
            "outstanding_at_bot_exit": outstanding,
        }
        if req["accepted"] > accounted:
            violation(
                "%d accepted requests are neither in a committed match, nor pending, nor expired "
                "(bot accepted %d; nodes: 2 x %d matches + %d + %d pending; bot: %d expired)"
                % (req["accepted"] - accounted, req["accepted"], n_matches, pending_riders, pending_drivers, expired)
            )
        # Requests the nodes accepted but whose answer the bot never got
        # (a node killed mid-request) show up as transport errors.
        if expired == 0 and accounted - req["accepted"] > req["transport_errors"]:
            violation(
                "nodes hold %d more requests than the bot had accepted (%d transport errors could explain only those)"
                % (accounted - req["accepted"], req["transport_errors"])
            )
        if mt["received"] > len(told_by_rider):
            violation("bot counted %d matches but recorded %d" % (mt["received"], len(told_by_rider)))
        if outstanding < 0:
            violation("bot summary inconsistent: more outcomes than accepted requests")
        if pending_riders + pending_drivers > max(outstanding, 0):
            violation(
                "nodes have %d requests pending, the bot was waiting on only %d"
                % (pending_riders + pending_drivers, outstanding)
            )
    # Per kind, from the nodes' own counters (not after a restart: they reset).
    if not args.restarted and all(m is not None for m in metrics) and summary is not None:
        accepted_kind = defaultdict(int)
        for text in metrics:
            for line in text.splitlines():
                if line.startswith("ride_requests_accepted_total{"):
                    kind = "rider" if 'kind="rider"' in line else "driver"
                    accepted_kind[kind] += int(float(line.rsplit(" ", 1)[1]))
        mt = summary["matches"]
        for kind, pend, exp in (
            ("rider", pending_riders, mt["expired_riders"]),
            ("driver", pending_drivers, mt["expired_drivers"]),
        ):
            accounting["%ss accepted by nodes" % kind] = accepted_kind[kind]
            if accepted_kind[kind] > n_matches + pend + exp:
                violation(
                    "%d %s requests accepted by the nodes are neither matched, pending nor expired"
                    % (accepted_kind[kind] - n_matches - pend - exp, kind)
                )
    elif args.restarted:
        notes.append("per-kind accounting from node counters skipped: %s restarted (counters reset)" % ", ".join(args.restarted))

    # Cross-border matches: the rider's owner commits (the notice's region);
    # the driver was told on its own region's socket.
    cross = defaultdict(int)
    for rider, lines in told_by_rider.items():
        m = lines[0]["message"]
        others = {endpoint_region(l["endpoint"], regions) for l in lines} - {m["region"], None}
        for other in others:
            cross[(m["region"], other)] += 1
    n_cross = sum(cross.values())

    # --- report ---
    print()
    print("== chaos report")
    print("partitions (%s):" % (partitions[0]["method"] if partitions else "none"))
    heals = {c["label"]: c for c in convergence}
    width = max([len(p["label"]) for p in partitions] + [len("final (bot stopped)")])
    for p in partitions:
        c = heals.get("heal " + p["label"]) or heals.get(p["label"])
        conv = "not measured"
        if c:
            conv = ("converged %.2f s after heal" % c["seconds"]) if c["converged"] else "NOT converged (%.1f s)" % c["seconds"]
        print("  %-*s  held %5.1f s   %s" % (width, p["label"], p["end"] - p["start"], conv))
    for c in convergence:
        if c["label"].startswith("final"):
            extra = ""
            if c.get("settled"):
                extra = "; last change %.2f s after it" % c["settled_after"]
            print("  %-*s  %s" % (width, c["label"], ("converged %.2f s after the last heal%s (limit %.0f s)" % (c["seconds"], extra, args.limit)) if c["converged"] else "NOT converged"))
    if summary:
        req, mt = summary["requests"], summary["matches"]
        print(
            "bot: %d requests sent, %d accepted, %d rejected, %d transport errors; told %d matches (%d drivers told), "
            "expired %d riders / %d drivers; ratings %d/%d accepted; %.0f s"
            % (
                req["sent"], req["accepted"], req["rejected"], req["transport_errors"], mt["received"],
                mt["driver_notices"], mt["expired_riders"], mt["expired_drivers"],
                summary["ratings"]["accepted"], summary["ratings"]["sent"], summary["elapsed_secs"],
            )
        )
    print("committed matches (union of all nodes): %d; told to the bot: %d; snapshots: %d" % (n_matches, len(told_by_rider), store["snapshots"]))
    print("cross-border matches: %d of %d told%s" % (
        n_cross, len(told_by_rider),
        "" if not cross else " (" + ", ".join("%s rider <- %s driver: %d" % (a, b, n) for (a, b), n in sorted(cross.items())) + ")"))
    if live:
        print("pending at the end (every node): %d riders, %d drivers" % (pending_riders, pending_drivers))
    if accounting:
        print("accounting: " + ", ".join("%s %s" % (k, v) for k, v in accounting.items()))
    for n in notes:
        print("note: " + n)
    if violations:
        print("VIOLATIONS (%d):" % len(violations))
        for v in violations[:50]:
            print("  - " + v)
        if len(violations) > 50:
            print("  ... and %d more" % (len(violations) - 50))
        return 1
    print("no violations")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("converge")
    s.add_argument("nodes", nargs="+", metavar="ID=URL")
    s.add_argument("--label", required=True)
    s.add_argument("--since", type=float, default=None)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--log", required=True)
    s.add_argument("--final", action="store_true")
    s.add_argument("--restarted", nargs="*", default=[])
    s.set_defaults(run=cmd_converge)
    s = sub.add_parser("snapshot")
    s.add_argument("nodes", nargs="+", metavar="ID=URL")
    s.add_argument("--store", required=True)
    s.set_defaults(run=cmd_snapshot)
    s = sub.add_parser("check")
    s.add_argument("nodes", nargs="+", metavar="ID=URL")
    s.add_argument("--store", required=True)
    s.add_argument("--record", required=True)
    s.add_argument("--bot-summary", required=True)
    s.add_argument("--convergence", required=True)
    s.add_argument("--partitions", required=True)
    s.add_argument("--regions", default="regions")
    s.add_argument("--limit", type=float, default=30)
    s.add_argument("--restarted", nargs="*", default=[])
    s.set_defaults(run=cmd_check)
    args = p.parse_args()
    if getattr(args, "since", 0) is None:
        args.since = time.time()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
