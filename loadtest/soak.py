#!/usr/bin/env python3
"""The soak's sampler (loadtest/soak.sh starts the stack and then this).

Every 30 s, for each service: RSS and threads (/proc/<pid>/status), open
file descriptors (/proc/<pid>/fd), and the p99s of the last 30 s: the
sampler's own REST predictions (2 a second, `POST /v1/predict` on one
keep-alive connection) and the predictor's stream event age (from its
`predictor_stream_event_age_seconds` histogram, differenced). After the
season: the end state in Postgres (every game stored, predicted once), the
verdict (memory and descriptors flat after the warm-up), samples.csv,
summary.json and soak.svg. Standard library only.
"""

import argparse
import csv
import http.client
import json
import os
import subprocess
import sys
import threading
import time

# The warm-up: 5 minutes (a fifth of a shorter soak).
WARMUP_S = 300
EVERY_S = 30
# Flat: the last third's peak within 10 % (and 16 MiB) of the first
# post-warm-up third's peak; descriptors within 20 of theirs.
RSS_GROWTH = 1.10
RSS_SLACK_KB = 16 * 1024
FD_SLACK = 20


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def p99(values):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def histogram(port, name):
    """Cumulative buckets {le: count} of `name`, summed over its labels."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    buckets = {}
    for line in body.splitlines():
        if line.startswith(name + "_bucket{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="')[1].split('"')[0]
            le = float("inf") if le == "+Inf" else float(le)
            buckets[le] = buckets.get(le, 0) + float(value)
    return buckets


def histogram_p99(before, after):
    """The p99 (a bucket's upper bound) of what was observed between two reads."""
    delta = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    for le, n in delta:
        if n >= 0.99 * total:
            return le
    return None


class Rest(threading.Thread):
    """Two REST predictions a second; keeps each latency, counts failures."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.lock, self.latencies, self.failures = port, threading.Lock(), [], 0
        self.stop = threading.Event()

    def take(self):
        with self.lock:
            out, self.latencies = self.latencies, []
            return out

    def run(self):
        body = json.dumps({"game_id": "soak", "features": [0.12, -0.5, 1.3, 0.0, 0.7, -1.1, 0.25, 0.9]})
        conn = None
        while not self.stop.wait(0.5):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                t = time.perf_counter()
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                ms = (time.perf_counter() - t) * 1000
                with self.lock:
                    if r.status == 200:
                        self.latencies.append(ms)
                    else:
                        self.failures += 1
            except OSError:
                with self.lock:
                    self.failures += 1
                conn = None


def psql(database, sql):
    out = subprocess.run(["psql", database, "-Atc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def plot(rows, services, path):
    """Four panels (RSS, descriptors, threads, p99s) against minutes, as SVG."""
    colors = {"fanout": "#1f77b4", "trainer": "#ff7f0e", "predictor": "#2ca02c",
              "collector": "#d62728", "rest": "#9467bd", "stream": "#8c564b"}
    panels = [
        ("RSS (MiB)", [(s, f"{s}_rss_kb", 1 / 1024) for s in services]),
        ("open file descriptors", [(s, f"{s}_fds", 1) for s in services]),
        ("threads", [(s, f"{s}_threads", 1) for s in services]),
        ("p99 (ms)", [("rest", "rest_p99_ms", 1), ("stream", "stream_age_p99_ms", 1)]),
    ]
    W, H, PAD = 900, 260, 60
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H * len(panels)}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H * len(panels)}" fill="white"/>']
    t_max = max(r["t_s"] for r in rows) / 60 or 1
    for i, (title, series) in enumerate(panels):
        y0 = i * H
        values = [r[k] * f for _, k, f in series for r in rows if r.get(k) not in (None, "")]
        v_max = max(values) * 1.1 if values and max(values) > 0 else 1
        svg.append(f'<text x="{PAD}" y="{y0 + 20}" font-weight="bold">{title}</text>')
        svg.append(f'<line x1="{PAD}" y1="{y0 + H - 30}" x2="{W - 20}" y2="{y0 + H - 30}" stroke="black"/>')
        svg.append(f'<line x1="{PAD}" y1="{y0 + 30}" x2="{PAD}" y2="{y0 + H - 30}" stroke="black"/>')
        for frac in (0, 0.5, 1):
            y = y0 + H - 30 - frac * (H - 60)
            svg.append(f'<text x="{PAD - 5}" y="{y + 4}" text-anchor="end">{v_max * frac:.0f}</text>')
        for m in range(0, int(t_max) + 1, max(1, int(t_max) // 10)):
            x = PAD + m / t_max * (W - PAD - 20)
            svg.append(f'<text x="{x}" y="{y0 + H - 14}" text-anchor="middle">{m} min</text>')
        warm = PAD + (WARMUP_S / 60) / t_max * (W - PAD - 20)
        if WARMUP_S / 60 < t_max:
            svg.append(f'<line x1="{warm}" y1="{y0 + 30}" x2="{warm}" y2="{y0 + H - 30}" '
                       f'stroke="#aaa" stroke-dasharray="4"/>')
        for j, (name, key, f) in enumerate(series):
            pts = [(PAD + r["t_s"] / 60 / t_max * (W - PAD - 20), y0 + H - 30 - r[key] * f / v_max * (H - 60))
                   for r in rows if r.get(key) not in (None, "")]
            if pts:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                svg.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="1.5" points="{d}"/>')
            svg.append(f'<text x="{W - 150}" y="{y0 + 20 + 14 * j}" fill="{colors[name]}">{name}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", required=True, help="lines of: name pid port")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--games", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    global WARMUP_S
    WARMUP_S = min(WARMUP_S, a.minutes * 60 / 5)
    services = {}
    with open(a.services) as f:
        for line in f:
            name, pid, port = line.split()
            services[name] = (int(pid), int(port))
    names = list(services)
    rest = Rest(services["predictor"][1])
    rest.start()
    age = histogram(services["predictor"][1], "predictor_stream_event_age_seconds")
    rows, start = [], time.monotonic()
    end = start + a.minutes * 60
    while time.monotonic() < end:
        time.sleep(EVERY_S - (time.monotonic() - start) % EVERY_S)
        row = {"t_s": round(time.monotonic() - start)}
        for name, (pid, _) in services.items():
            try:
                st = proc_status(pid)
            except FileNotFoundError:
                sys.exit(f"soak: {name} (pid {pid}) is gone")
            row[f"{name}_rss_kb"], row[f"{name}_threads"], row[f"{name}_fds"] = st["VmRSS"], st["Threads"], st["fds"]
        row["rest_p99_ms"] = p99(rest.take())
        now = histogram(services["predictor"][1], "predictor_stream_event_age_seconds")
        q = histogram_p99(age, now)
        row["stream_age_p99_ms"] = None if q is None or q == float("inf") else q * 1000
        age = now
        row["predictions"] = int(psql(a.database, "SELECT count(*) FROM predictions"))
        rows.append(row)
        print("soak:", json.dumps(row), flush=True)
    rest.stop.set()

    # The end state: the season is over (the last games may still be in
    # flight for a moment), every game stored and predicted once.
    deadline = time.monotonic() + 120
    while True:
        games = int(psql(a.database, "SELECT count(*) FROM games WHERE status = 'final'"))
        predicted = int(psql(a.database, "SELECT count(DISTINCT game_id) FROM predictions"))
        if (games == predicted == a.games) or time.monotonic() > deadline:
            break
        time.sleep(2)
    stored = int(psql(a.database, "SELECT count(*) FROM games"))
    rows_predicted = int(psql(a.database, "SELECT count(*) FROM predictions"))

    fields = list(rows[0])
    with open(os.path.join(a.out, "samples.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    plot(rows, names, os.path.join(a.out, "soak.svg"))

    after = [r for r in rows if r["t_s"] >= WARMUP_S]
    third = max(1, len(after) // 3)
    verdict = {}
    for name in names:
        first, last = after[:third], after[-third:]
        rss0, rss1 = (max(r[f"{name}_rss_kb"] for r in x) for x in (first, last))
        fd0, fd1 = (max(r[f"{name}_fds"] for r in x) for x in (first, last))
        verdict[name] = {
            "rss_mib_after_warmup": round(rss0 / 1024, 1),
            "rss_mib_at_end": round(rss1 / 1024, 1),
            "fds_after_warmup": fd0,
            "fds_at_end": fd1,
            "threads_at_end": last[-1][f"{name}_threads"],
            "flat": rss1 <= max(rss0 * RSS_GROWTH, rss0 + RSS_SLACK_KB) and fd1 <= fd0 + FD_SLACK,
        }
    rest_p99 = [r["rest_p99_ms"] for r in after if r["rest_p99_ms"] is not None]
    summary = {
        "minutes": a.minutes,
        "samples": len(rows),
        "games": a.games,
        "games_final": games,
        "games_stored": stored,
        "games_predicted": predicted,
        "prediction_rows": rows_predicted,
        "rest_requests_failed": rest.failures,
        "rest_p99_ms_median_of_windows": sorted(rest_p99)[len(rest_p99) // 2] if rest_p99 else None,
        "services": verdict,
    }
    lost = not (stored == games == predicted == rows_predicted == a.games)
    summary["pass"] = all(v["flat"] for v in verdict.values()) and not lost and rest.failures == 0
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    sys.exit(0 if summary["pass"] else 1)


if __name__ == "__main__":
    main()
