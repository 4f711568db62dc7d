#!/usr/bin/env python3
"""Helpers for scripts/mesh.sh and scripts/chaos.sh (python3 stdlib only).

    mesh.py regions DIR                 id, http, quic, centroid lat, lon per region (TSV)
    mesh.py delays DIR [--min-ms 20]    one-way WAN delay per region pair
                                        (TSV: a, b, km, computed ms, ms used)
    mesh.py ports --tcp N --udp M       free loopback ports (TCP first, then UDP), one per line
    mesh.py status ID=URL...            one line per node from /debug/state and /metrics
    mesh.py busy tcp:HOST:PORT udp:...  prints the addresses in use; exit 1 if any
"""

import argparse
import glob
import json
import math
import os
import socket
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

EARTH_RADIUS_KM = 6371.0088
# Light in fibre covers ~200 km per ms, i.e. 5 us per km; real routes are
# about twice the great-circle distance, and a few hops add ~10 ms.
US_PER_KM = 5.0
ROUTE_FACTOR = 2.0
BASE_MS = 10.0


def load_regions(directory):
    """Region files in id order: dicts with id, http, quic, ring, centroid."""
    regions = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        ring = doc["area"]["coordinates"][0]
        regions.append(
            {
                "id": doc["id"],
                "http": doc["mesh"]["http"],
                "quic": doc["mesh"]["quic"],
                "ring": ring,
                "holes": doc["area"]["coordinates"][1:],
                "centroid": centroid(ring),
            }
        )
    if not regions:
        sys.exit("no region files in %s" % directory)
    regions.sort(key=lambda r: r["id"])
    return regions


def centroid(ring):
    """Area centroid (lat, lon) of a closed [lon, lat] ring, treated as planar
    (fine at city scale); the vertex mean if the ring is degenerate."""
    a = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:]):
        cross = x0 * y1 - x1 * y0
        a += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(a) < 1e-12:
        pts = ring[:-1]
        return (sum(p[1] for p in pts) / len(pts), sum(p[0] for p in pts) / len(pts))
    return (cy / (3 * a), cx / (3 * a))


def haversine_km(a, b):
    (lat1, lon1), (lat2, lon2) = a, b
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def inside(ring, lat, lon):
    """Even-odd point-in-polygon test on a [lon, lat] ring."""
    hit = False
    for (x0, y0), (x1, y1) in zip(ring, ring[1:]):
        if (y0 > lat) != (y1 > lat):
            x = x0 + (lat - y0) * (x1 - x0) / (y1 - y0)
            if lon < x:
                hit = not hit
    return hit


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


def cmd_regions(args):
    for r in load_regions(args.dir):
        lat, lon = r["centroid"]
        print("\t".join([r["id"], r["http"], r["quic"], "%.6f" % lat, "%.6f" % lon]))


def cmd_delays(args):
    regions = load_regions(args.dir)
    for a in regions:
        for b in regions:
            if a["id"] >= b["id"]:
                continue
            km = haversine_km(a["centroid"], b["centroid"])
            ms = km * US_PER_KM * ROUTE_FACTOR / 1000.0 + BASE_MS
            print("%s\t%s\t%.1f\t%.1f\t%d" % (a["id"], b["id"], km, ms, max(round(ms), args.min_ms)))


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
    s = sub.add_parser("regions")
    s.add_argument("dir")
    s.set_defaults(run=cmd_regions)
    s = sub.add_parser("delays")
    s.add_argument("dir")
    s.add_argument("--min-ms", type=int, default=20)
    s.set_defaults(run=cmd_delays)
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
