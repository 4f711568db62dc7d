#!/usr/bin/env python3
"""Helpers for scripts/mesh.sh and scripts/chaos.sh (python3 stdlib only):
sockets and HTTP, nothing of the domain. The region files are read by the
node itself (`node regions list|distances`, see scripts/lib/mesh-lib.sh).

    mesh.py ports --tcp N --udp M       free loopback ports (TCP first, then UDP), one per line
    mesh.py status ID=URL...            one line per node from /debug/state and /metrics
    mesh.py busy tcp:HOST:PORT udp:...  prints the addresses in use; exit 1 if any
"""

import argparse
import json
import socket
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def get_json(url, timeout=2.0):
    return json.loads(get(url, timeout))


def parse_nodes(items):
    """`id=http://host:port` arguments -> [(id, base_url)]."""
    nodes = []
    for item in items:
        node, _, url = item.partition("=")
        nodes.append((node, url.rstrip("/")))
    return nodes


def fetch_all(nodes, path, parse=get_json, timeout=2.0):
    """GET path on every node at once (so the answers are close in time);
    a node that does not answer gives None."""

    def one(node):
        try:
            return parse(node[1] + path, timeout)
        except Exception:
            return None

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        return list(pool.map(one, nodes))


def accepted_total(metrics_text):
    """Sum of ride_requests_accepted_total over its labels."""
    total = 0.0
    for line in (metrics_text or "").splitlines():
        if line.startswith("ride_requests_accepted_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def cmd_ports(args):
    # Hold every socket until all are bound, so the ports are distinct.
    held = []
    for kind, count in ((socket.SOCK_STREAM, args.tcp), (socket.SOCK_DGRAM, args.udp)):
        for _ in range(count):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            held.append(s)
    for s in held:
        print(s.getsockname()[1])
        s.close()


def cmd_busy(args):
    busy = []
    for spec in args.specs:
        kind, host, port = spec.split(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
        if kind == "tcp":
            # As a listener would: connections in TIME_WAIT do not count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            busy.append("%s %s:%s" % (kind, host, port))
        finally:
            s.close()
    print(", ".join(busy))
    sys.exit(1 if busy else 0)


def cmd_status(args):
    nodes = parse_nodes(args.nodes)
    states = fetch_all(nodes, "/debug/state")
    metrics = fetch_all(nodes, "/metrics", parse=get)
    width = max(len(n) for n, _ in nodes)
    stamp = time.strftime("%H:%M:%S")
    for (node, _), s, m in zip(nodes, states, metrics):
        if s is None:
            print("%s %-*s  (not answering)" % (stamp, width, node))
            continue
        print(
            "%s %-*s  pending riders %4d drivers %4d  matches %6d  accepted %7d  docs %4d  "
            "digest %s  %s"
            % (
                stamp,
                width,
                node,
                s["pending_riders"],
                s["pending_drivers"],
                s["committed_matches"],
                accepted_total(m),
                s["documents"],
                s["digest"],
                "ready" if s["ready"] else "NOT READY",
            )
        )
    digests = {s["digest"] for s in states if s}
    if len(nodes) > 1 and len(digests) == 1 and None not in states:
        print("%s %-*s  all digests equal" % (stamp, width, ""))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("--tcp", type=int, default=0)
    s.add_argument("--udp", type=int, default=0)
    s.set_defaults(run=cmd_ports)
    s = sub.add_parser("busy")
    s.add_argument("specs", nargs="+")
    s.set_defaults(run=cmd_busy)
    s = sub.add_parser("status")
    s.add_argument("nodes", nargs="+", metavar="ID=URL")
    s.set_defaults(run=cmd_status)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
