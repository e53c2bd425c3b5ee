#!/usr/bin/env python3
"""stackcheck: the client side of a test of a deployed fantasy stack.

Subcommands (``stackcheck.py <command> --help`` for every option):

  ws-collect        one WebSocket client on the fanout: records every
                    prediction frame, reconnects and recovers with ``since``
  ws-clients        N such clients at once (e.g. across a rolling update of
                    the fanout); checks that none missed or duplicated a frame
  ws-report         checks a ws-collect --out file: every expected game came
                    in exactly one frame
  rest-predictions  GET /v1/predictions/<game_id> for a list of games
  predict-load      a steady load of POST /v1/predict; counts failed requests
  token             mints a JWT (HS256) for curl

Conventions:

* Every subcommand prints one JSON object on stdout (its figures), except
  ``token``, which prints the bare token (``--json`` for an object).
* Exit status: 0 when the check passes, 1 when it fails (each reason on
  stderr, one a line, prefixed ``stackcheck: FAIL:``), 2 on a usage error
  (bad arguments, unreadable files, ``websockets`` missing).
* Everything is bounded in time by arguments with defaults; the script only
  connects to the URLs it is given, and ignores proxy variables.
* Authentication: with ``--jwt-secret-file F`` each command mints its own
  token, claims ``{sub, exp, admin?, channels?}`` signed HS256 with the
  file's contents (trailing newlines removed, as the services read
  ``JWT_SECRET_FILE``), and sends it as ``Authorization: Bearer <jwt>``
  (``--token-in-query`` sends it to the fanout as ``?token=<jwt>``).
  Without the option no token is sent (``AUTH_REQUIRED=false``).

Python 3.11 standard library only, plus ``websockets`` (15.x) for the ws-*
commands, installed with
``python3 -m pip install --target .tools/stackcheck websockets==15.0.1``
(the folder is added to ``sys.path`` when it exists).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import importlib.util
import inspect
import http.client
import json
import math
import os
import random
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VENDOR = os.path.join(_ROOT, ".tools", "stackcheck")
if os.path.isdir(_VENDOR):
    sys.path.insert(0, _VENDOR)

# Lists in figures and --out files are cut to this many entries (the counts
# stay exact).
LIST_LIMIT = 50

# Close codes after which the protocol says to reconnect and resubscribe
# with `since`. The client reconnects after any close or drop; the others
# are counted as `unexpected_closes` (1006: the connection dropped without
# a close frame, e.g. a replica killed rather than shut down).
RECONNECT_CODES = {"1001", "4001"}


class UsageError(Exception):
    """Bad arguments or inputs: exit 2."""


# --------------------------------------------------------------------------
# Small helpers


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of `values`, None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def latency_figures(seconds: list[float]) -> dict:
    """p50/p99/max/mean of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


def write_json(path: str, obj) -> None:
    """Writes `obj` to `path` atomically (a temporary file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_games(path: str) -> list[str]:
    """Game ids from `path`: one per line (blank lines and `#` comments
    skipped), or the JSON file written by ws-collect / ws-clients --records
    (the distinct game ids of its predictions, in order of first arrival)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read games file {path}: {e}") from e
    games: list[str] = []
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise UsageError(f"{path}: not valid JSON: {e}") from e
        preds = doc.get("predictions")
        if preds is None and isinstance(doc.get("clients"), list):
            preds = [p for c in doc["clients"] if isinstance(c, dict) for p in c.get("predictions") or []]
        if not isinstance(preds, list):
            raise UsageError(f"{path}: a JSON games file needs a 'predictions' list")
        for p in preds:
            if isinstance(p, dict) and isinstance(p.get("game_id"), str):
                games.append(p["game_id"])
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                games.append(line)
    return list(dict.fromkeys(games))


def positive(kind):
    """argparse type: a number > 0."""

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not v > 0 or (isinstance(v, float) and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{s!r} must be > 0")
        return v

    return parse


def non_negative_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not v >= 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{s!r} must be >= 0")
    return v


# --------------------------------------------------------------------------
# JWT (HS256), as libs/http/src/auth.rs checks it: header alg HS256, claims
# `sub` and `exp` required, `admin` (bool) and `channels` (list) optional.


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_secret(path: str) -> bytes:
    """The HS256 key in `path`, trailing CR/LF removed (as the services read
    JWT_SECRET_FILE)."""
    try:
        with open(path, "rb") as f:
            secret = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise UsageError(f"cannot read --jwt-secret-file {path}: {e}") from e
    if not secret:
        raise UsageError(f"--jwt-secret-file {path} is empty")
    if len(secret) < 32:
        print(
            f"stackcheck: warning: the secret in {path} is {len(secret)} bytes; "
            "the services refuse keys under 32 bytes",
            file=sys.stderr,
        )
    return secret


def mint_token(
    secret: bytes,
    sub: str,
    ttl: int,
    admin: bool = False,
    channels: list[str] | None = None,
) -> str:
    """A JWT signed HS256 with `secret`."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims: dict = {"sub": sub, "exp": int(time.time()) + ttl}
    if admin:
        claims["admin"] = True
    if channels is not None:
        claims["channels"] = channels
    compact = lambda o: json.dumps(o, separators=(",", ":")).encode()  # noqa: E731
    signing_input = f"{_b64url(compact(header))}.{_b64url(compact(claims))}"
    sig = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(sig)}"


def token_from_args(args) -> str | None:
    """The token a command sends, or None without --jwt-secret-file."""
    if not args.jwt_secret_file:
        return None
    secret = read_secret(args.jwt_secret_file)
    return mint_token(secret, args.sub, args.token_ttl, admin=getattr(args, "admin", False))


# --------------------------------------------------------------------------
# token


def cmd_token(args) -> tuple[dict | str, list[str]]:
    """Mints a token and prints it bare on stdout (for
    ``curl -H "Authorization: Bearer $(stackcheck.py token --jwt-secret-file F)"``),
    or as ``{"token", "claims"}`` with --json. Claims: sub (--sub), exp (now +
    --token-ttl), admin with --admin, channels with --channels (comma list)."""
    if not args.jwt_secret_file:
        raise UsageError("token needs --jwt-secret-file")
    secret = read_secret(args.jwt_secret_file)
    channels = None
    if args.channels is not None:
        channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    tok = mint_token(secret, args.sub, args.token_ttl, admin=args.admin, channels=channels)
    if args.json:
        payload = tok.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return {"token": tok, "claims": claims}, []
    return tok, []


# --------------------------------------------------------------------------
# WebSocket clients


def parse_channels(s: str) -> list[str]:
    chans = [c.strip() for c in s.split(",") if c.strip()]
    if not chans:
        raise UsageError("--channels is empty")
    for c in chans:
        ok = c in ("all", "metrics") or (
            (c.startswith("game:") and len(c) > 5) or (c.startswith("sport:") and len(c) > 6)
        )
        if not ok:
            raise UsageError(f"--channels: {c!r} is not game:<id>, sport:<sport>, all or metrics")
    return list(dict.fromkeys(chans))


def ws_url_check(url: str) -> None:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("ws", "wss") or not u.hostname:
        raise UsageError(f"--url {url!r}: expected ws://host:port/v1/stream")


class StreamClient:
    """One fanout client that subscribes, records every `prediction` frame,
    and on any close or drop reconnects (back-off from --min-backoff doubling
    to --max-backoff, reset once subscribed again) and resubscribes with
    `since` = its tracked position per channel, as PROTOCOL.md says.

    Tracking, per channel and partition:

    * `baseline`: the `positions` of the first `subscribed` frame of the
      channel (a partition it omits stands at -1): the client is responsible
      for every frame after it.
    * `pos`: the highest offset seen (from the baseline, prediction frames,
      and the `positions` of a `subscribed` frame with `recovered: false`,
      after which the skipped range is noted as `unrecovered`). `pos` is what
      goes back as `since`.
    * a frame whose (channel, partition, offset) was seen already is a
      duplicate; one above `pos + 1` leaves a gap of the offsets between; one
      at or below `pos` that was not seen is out of order.
    """

    def __init__(self, name: str, args, token: str | None, t0: float, stop: asyncio.Event):
        self.name = name
        self.url = args.url
        self.channels = args.channels
        self.token = token
        self.token_in_query = args.token_in_query
        self.t0 = t0
        self.deadline = t0 + args.seconds
        self.idle = args.idle
        self.stop = stop
        self.min_backoff = args.min_backoff
        self.max_backoff = args.max_backoff
        self.open_timeout = args.open_timeout

        self.stopped_by: str | None = None
        self.fatal: str | None = None
        self.connections = 0  # upgrades that succeeded
        self.reconnects = 0  # successful connections after the first
        self.connect_errors: Counter = Counter()
        self.closes: Counter = Counter()  # close code (1006: dropped) -> count
        self.subscribed = 0
        self.recovered = 0
        self.not_recovered = 0
        self.snapshots = 0
        self.snapshot_games: set[str] = set()
        self.error_frames: Counter = Counter()
        self.other_frames: Counter = Counter()
        self.malformed = 0

        self.baseline: dict[str, dict[int, int]] = {}
        self.pos: dict[str, dict[int, int]] = {}
        self.seen: set[tuple[str, int, int]] = set()
        self.frames = 0
        self.records: list[dict] = []
        self.received: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.duplicates: list[dict] = []
        self.n_duplicates = 0
        self.out_of_order = 0
        self.gap_count: Counter = Counter()  # (channel, partition) -> offsets skipped
        self.gap_ranges: list[dict] = []
        self.unrecovered: list[dict] = []
        self.last_prediction_at: float | None = None
        self.ended_at: float | None = None

    # -- time -------------------------------------------------------------

    def should_stop(self) -> bool:
        now = time.monotonic()
        if self.fatal:
            return True
        if self.stop.is_set():
            self.stopped_by = self.stopped_by or "signal"
            return True
        if now >= self.deadline:
            self.stopped_by = self.stopped_by or "seconds"
            return True
        if self.idle and self.last_prediction_at is not None:
            if now - self.last_prediction_at >= self.idle:
                self.stopped_by = self.stopped_by or "idle"
                return True
        return False

    def wait_budget(self) -> float:
        """How long one receive may wait before the stop conditions are
        checked again."""
        now = time.monotonic()
        budget = min(0.5, self.deadline - now)
        if self.idle and self.last_prediction_at is not None:
            budget = min(budget, self.last_prediction_at + self.idle - now)
        return max(0.01, budget)

    async def nap(self, seconds: float) -> None:
        end = min(time.monotonic() + seconds, self.deadline)
        while not self.should_stop() and time.monotonic() < end:
            await asyncio.sleep(min(0.1, max(0.0, end - time.monotonic())))

    # -- connection -------------------------------------------------------

    def _connect_target(self) -> tuple[str, dict]:
        url, headers = self.url, {}
        if self.token:
            if self.token_in_query:
                sep = "&" if urllib.parse.urlsplit(url).query else "?"
                url = f"{url}{sep}token={urllib.parse.quote(self.token, safe='')}"
            else:
                headers["Authorization"] = f"Bearer {self.token}"
        return url, headers

    def subscribe_op(self) -> dict:
        op: dict = {"op": "subscribe", "channels": self.channels}
        since = {
            ch: {str(p): o for p, o in sorted(self.pos[ch].items())}
            for ch in self.channels
            if ch in self.pos and ch != "metrics"
        }
        if since:
            op["since"] = since
        return op

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

        backoff = self.min_backoff
        while not self.should_stop():
            url, headers = self._connect_target()
            try:
                ws = await connect(
                    url,
                    additional_headers=headers,
                    proxy=None,
                    compression=None,
                    open_timeout=max(0.5, min(self.open_timeout, self.deadline - time.monotonic())),
                    ping_interval=10,
                    ping_timeout=10,
                    close_timeout=2,
                    max_size=64 * 1024 * 1024,
                    max_queue=1024,
                    user_agent_header=f"stackcheck/{self.name}",
                )
            except InvalidStatus as e:
                status = e.response.status_code
                self.connect_errors[f"http_{status}"] += 1
                if status in (401, 403):
                    body = e.response.body.decode("utf-8", "replace")[:300] if e.response.body else ""
                    self.fatal = f"the fanout refused the upgrade with HTTP {status}: {body}"
                    break
            except (OSError, TimeoutError, WebSocketException) as e:
                self.connect_errors[type(e).__name__] += 1
            else:
                self.connections += 1
                if self.connections > 1:
                    self.reconnects += 1
                subscribed_again = await self.session(ws, ConnectionClosed)
                if subscribed_again:
                    backoff = self.min_backoff
                if self.should_stop():
                    break
            await self.nap(backoff)
            backoff = min(self.max_backoff, backoff * 2)
        self.should_stop()
        self.ended_at = time.monotonic()

    async def session(self, ws, ConnectionClosed) -> bool:
        """One connection: subscribe, then read until it closes or the client
        stops. Returns whether a `subscribed` frame came back."""
        before = self.subscribed
        try:
            await ws.send(json.dumps(self.subscribe_op()))
            while not self.should_stop():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=self.wait_budget())
                except TimeoutError:
                    continue
                self.handle(raw)
                if self.fatal:
                    break
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else 1006
            self.closes[str(code)] += 1
            return self.subscribed > before
        except OSError as e:
            self.closes[f"error:{type(e).__name__}"] += 1
            return self.subscribed > before
        # We stop: close politely, bounded by close_timeout.
        try:
            await asyncio.wait_for(ws.close(), timeout=3)
        except Exception:  # noqa: BLE001 - the connection is going anyway
            pass
        return self.subscribed > before

    # -- frames -----------------------------------------------------------

    def handle(self, raw) -> None:
        try:
            msg = json.loads(raw)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            self.malformed += 1
            return
        if kind == "prediction":
            self.on_prediction(msg)
        elif kind == "subscribed":
            self.on_subscribed(msg)
        elif kind == "snapshot":
            self.snapshots += 1
            for p in msg.get("data") or []:
                if isinstance(p, dict) and isinstance(p.get("game_id"), str):
                    self.snapshot_games.add(p["game_id"])
        elif kind == "error":
            code = str(msg.get("code"))
            self.error_frames[code] += 1
            if code in ("unknown_channel", "forbidden_channel", "too_many_subscriptions"):
                self.fatal = f"the fanout refused the subscription: {code}: {msg.get('message')}"
        else:
            self.other_frames[str(kind)] += 1

    def on_subscribed(self, msg: dict) -> None:
        ch = msg.get("channel")
        try:
            positions = {int(p): int(o) for p, o in (msg.get("positions") or {}).items()}
        except (TypeError, ValueError):
            self.malformed += 1
            return
        self.subscribed += 1
        if ch not in self.pos:
            # First subscription of the channel: track from where the
            # replica stood.
            self.baseline[ch] = dict(positions)
            self.pos[ch] = dict(positions)
            return
        if msg.get("recovered") is True:
            # The replay of everything after `since` follows.
            self.recovered += 1
            return
        # recovered: false: a snapshot stands in for what was missed; the
        # protocol has us track from the replica's positions.
        self.not_recovered += 1
        tracked = self.pos[ch]
        for p, o in positions.items():
            last = tracked.get(p, -1)
            if o > last:
                self.unrecovered.append(
                    {"channel": ch, "partition": p, "from": last + 1, "to": o,
                     "t": round(time.monotonic() - self.t0, 3)}
                )
                tracked[p] = o

    def on_prediction(self, msg: dict) -> None:
        try:
            ch = msg["channel"]
            p = int(msg["position"]["partition"])
            o = int(msg["position"]["offset"])
            data = msg.get("data") or {}
        except (KeyError, TypeError, ValueError):
            self.malformed += 1
            return
        now = time.monotonic()
        self.frames += 1
        self.last_prediction_at = now
        rec = {
            "channel": ch,
            "game_id": data.get("game_id"),
            "model_version": data.get("model_version"),
            "partition": p,
            "offset": o,
            "home_win_prob": data.get("home_win_prob"),
            "t": round(now - self.t0, 3),
            "conn": self.connections,
        }
        self.records.append(rec)
        key = (ch, p, o)
        if key in self.seen:
            self.n_duplicates += 1
            if len(self.duplicates) < LIST_LIMIT:
                self.duplicates.append(rec)
            return
        self.seen.add(key)
        self.received[(ch, p)].append(o)
        tracked = self.pos.setdefault(ch, {})
        last = tracked.get(p, -1)
        if o > last + 1:
            self.gap_count[(ch, p)] += o - last - 1
            if len(self.gap_ranges) < LIST_LIMIT:
                self.gap_ranges.append(
                    {"channel": ch, "partition": p, "from": last + 1, "to": o - 1,
                     "t": rec["t"], "conn": self.connections}
                )
        elif o <= last:
            self.out_of_order += 1
        if o > last:
            tracked[p] = o

    # -- figures ----------------------------------------------------------

    def gaps_by_channel(self) -> dict:
        out: dict = {}
        for (ch, p), n in sorted(self.gap_count.items()):
            out.setdefault(ch, {})[str(p)] = n
        return out

    def summary(self) -> dict:
        games = {r["game_id"] for r in self.records if r["game_id"]}
        partitions: dict = {}
        for (ch, p), offs in sorted(self.received.items()):
            partitions.setdefault(ch, {})[str(p)] = {
                "frames": len(offs),
                "first": min(offs),
                "last": max(offs),
                "baseline": self.baseline.get(ch, {}).get(p, -1),
            }
        return {
            "frames": self.frames,
            "distinct_frames": len(self.seen),
            "distinct_games": len(games),
            "duplicates": self.n_duplicates,
            "out_of_order": self.out_of_order,
            "gaps": self.gaps_by_channel(),
            "gaps_total": sum(self.gap_count.values()),
            "connections": self.connections,
            "reconnects": self.reconnects,
            "closes": dict(self.closes),
            "unexpected_closes": sum(n for c, n in self.closes.items() if c not in RECONNECT_CODES),
            "connect_errors": dict(self.connect_errors),
            "subscribed": self.subscribed,
            "recovered": self.recovered,
            "not_recovered": self.not_recovered,
            "unrecovered_offsets": sum(r["to"] - r["from"] + 1 for r in self.unrecovered),
            "unrecovered_ranges": self.unrecovered[:LIST_LIMIT],
            "snapshots": self.snapshots,
            "error_frames": dict(self.error_frames),
            "malformed": self.malformed,
            "model_versions": dict(Counter(r["model_version"] for r in self.records)),
            "partitions": partitions,
            "stopped_by": self.stopped_by,
            "fatal": self.fatal,
        }


def _ws_setup(args):
    if importlib.util.find_spec("websockets") is None:
        raise UsageError(
            "the ws-* commands need the websockets package: python3 -m pip install "
            f"--target {_VENDOR} websockets==15.0.1"
        )
    ws_url_check(args.url)
    args.channels = parse_channels(args.channels)
    if args.max_backoff < args.min_backoff:
        raise UsageError("--max-backoff must be >= --min-backoff")
    return token_from_args(args)


async def _run_clients(clients: list[StreamClient], stagger: float, stop: asyncio.Event, hard: float):
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass

    async def start(i: int, c: StreamClient):
        if stagger and i:
            await asyncio.sleep(min(stagger * i, max(0.0, c.deadline - time.monotonic())))
        await c.run()

    tasks = [asyncio.create_task(start(i, c)) for i, c in enumerate(clients)]
    done, pending = await asyncio.wait(tasks, timeout=hard)
    for t in pending:
        t.cancel()
    for c in clients:
        if c.stopped_by is None and not c.fatal:
            c.stopped_by = "hard-timeout"
    for t in done:
        if t.exception() is not None:
            raise t.exception()


def cmd_ws_collect(args) -> tuple[dict, list[str]]:
    """One fanout client for --seconds (or until --idle seconds pass without
    a prediction frame once one arrived). Records every prediction frame to
    --out (``{"url", "channels", "summary", "predictions": [{channel,
    game_id, model_version, partition, offset, home_win_prob, t, conn}]}``)
    and prints the summary: frames, distinct games, duplicates (the same
    (channel, partition, offset) delivered twice), reconnects, recovered /
    not recovered resubscriptions, per-partition gaps.

    Fails (exit 1) on: fewer than --min-frames prediction frames; any
    duplicate; an upgrade refused with 401/403 or a refused subscription;
    with --no-gaps, any gap or unrecovered range (offsets are contiguous per
    partition only on channel `all`, where every record of the topic is a
    prediction); with --expect-games FILE, any listed game without a
    prediction frame (the missing ones are listed)."""
    token = _ws_setup(args)
    expected = read_games(args.expect_games) if args.expect_games else None

    async def main():
        stop = asyncio.Event()
        t0 = time.monotonic()
        client = StreamClient("c0", args, token, t0, stop)
        await _run_clients([client], 0, stop, args.seconds + 15)
        return client, time.monotonic() - t0

    started = time.time()
    client, took = asyncio.run(main())
    s = client.summary()
    failures: list[str] = []
    if client.fatal:
        failures.append(client.fatal)
    if client.frames < args.min_frames and not client.fatal:
        failures.append(f"{client.frames} prediction frames, fewer than --min-frames {args.min_frames}")
    if client.n_duplicates:
        failures.append(f"{client.n_duplicates} duplicate frames (first: {client.duplicates[:3]})")
    if args.no_gaps and s["gaps_total"]:
        failures.append(f"{s['gaps_total']} offsets skipped: {s['gaps']} (first ranges: {client.gap_ranges[:3]})")
    if args.no_gaps and client.not_recovered:
        failures.append(f"{client.not_recovered} resubscriptions not recovered: {client.unrecovered[:3]}")
    figures = {"command": "ws-collect", "url": args.url, "channels": args.channels,
               "started_at": started, "seconds": round(took, 3), **s}
    per_game, _ = game_deliveries(client.records)
    figures["repeated_games"] = {ch: sum(1 for f in games.values() if len(f) > 1)
                                 for ch, games in per_game.items()}
    if expected is not None:
        got = {r["game_id"] for r in client.records}
        missing = [g for g in expected if g not in got]
        figures["expected_games"] = len(expected)
        figures["missing_games"] = len(missing)
        figures["missing"] = missing[:LIST_LIMIT]
        figures["missing_only_in_snapshot"] = len([g for g in missing if g in client.snapshot_games])
        if missing:
            failures.append(
                f"{len(missing)} of {len(expected)} expected games had no prediction frame: {missing[:10]}"
            )
    write_json(args.out, {"url": args.url, "channels": args.channels, "summary": figures,
                          "gap_ranges": client.gap_ranges, "duplicates": client.duplicates,
                          "predictions": client.records})
    figures["out"] = args.out
    return figures, failures


def cmd_ws_clients(args) -> tuple[dict, list[str]]:
    """Runs --clients N clients at once (started --stagger seconds apart),
    each a ws-collect client, for --seconds; meant to run across a rolling update
    of the fanout (replicas closing with 1001, clients reconnecting to
    another replica and resubscribing with `since`).

    "Missed nothing" means, for each client, channel and partition: the
    client is responsible for the offsets after its baseline B (the
    `positions` of its first `subscribed` frame for the channel; -1 where a
    partition is absent) up to L, the highest offset it received there.
    Frames arrive in order per partition (the replay after `since`, then
    live frames past the floor), so by the time a client has L it must have
    every frame of the channel in (B, L]. The reference for "every frame of
    the channel" is the union of what all the clients received: a client
    missed (p, o) if another client received it and B < o <= L for this one.
    That holds on any channel, where offsets of one channel are not
    contiguous (other channels' records sit between them); frames after a
    client's L (e.g. it was reconnecting at the end) are reported as
    `behind`, not as missed. Besides, a client fails when:

    * it received a (channel, partition, offset) twice (a replay that did
      not start strictly after `since`, or a live frame at or below the
      floor), i.e. duplicates;
    * a resubscription answered `recovered: false`: the snapshot stands in
      for frames that may be lost, which is not "missing nothing";
    * with --no-gaps, its offsets in (B, L] are not contiguous (on channel
      `all`, where every record is a prediction, a gap is a lost frame even
      if no client got it; this assumes every record of the topic decodes:
      the fanout skips an undecodable one, which then shows as a gap);
    * it got fewer than --min-frames prediction frames, its upgrade was
      refused with 401/403, or its subscription was refused.

    Writes to --out the per-client figures, their missed offsets, gap ranges
    and duplicates (and every frame with --records); prints the totals and a
    compact line per client."""
    token = _ws_setup(args)
    if args.clients > 1000:
        raise UsageError("--clients: at most 1000")

    async def main():
        stop = asyncio.Event()
        t0 = time.monotonic()
        clients = [StreamClient(f"c{i}", args, token, t0, stop) for i in range(args.clients)]
        await _run_clients(clients, args.stagger, stop, args.seconds + 15)
        return clients, time.monotonic() - t0

    started = time.time()
    clients, took = asyncio.run(main())

    union: dict[tuple[str, int], set[int]] = defaultdict(set)
    for c in clients:
        for key, offs in c.received.items():
            union[key].update(offs)

    failures: list[str] = []
    per_client = []
    details = []
    for c in clients:
        missed: list[dict] = []
        n_missed = 0
        behind = 0
        for (ch, p), all_offs in union.items():
            if ch not in c.baseline:
                continue
            mine = set(c.received.get((ch, p), ()))
            b = c.baseline[ch].get(p, -1)
            top = max(mine) if mine else c.pos[ch].get(p, -1)
            for o in all_offs:
                if o <= b:
                    continue
                if o > top:
                    behind += 1
                elif o not in mine:
                    n_missed += 1
                    if len(missed) < LIST_LIMIT:
                        missed.append({"channel": ch, "partition": p, "offset": o})
        s = c.summary()
        gaps = s["gaps_total"]
        reasons = []
        if c.fatal:
            reasons.append(c.fatal)
        if c.frames < args.min_frames and not c.fatal:
            reasons.append(f"{c.frames} prediction frames < --min-frames {args.min_frames}")
        if c.n_duplicates:
            reasons.append(f"{c.n_duplicates} duplicate frames")
        if n_missed:
            reasons.append(f"missed {n_missed} frames other clients received (first {missed[:3]})")
        if c.not_recovered:
            reasons.append(f"{c.not_recovered} resubscriptions not recovered")
        if args.no_gaps and gaps:
            reasons.append(f"{gaps} offsets skipped {s['gaps']}")
        ok = not reasons
        for r in reasons:
            failures.append(f"{c.name}: {r}")
        per_client.append({
            "client": c.name, "ok": ok, "frames": c.frames, "reconnects": c.reconnects,
            "recovered": c.recovered, "not_recovered": c.not_recovered,
            "duplicates": c.n_duplicates, "missed": n_missed, "gaps": gaps,
            "behind": behind, "closes": dict(c.closes), "stopped_by": c.stopped_by,
        })
        d = {"client": c.name, "ok": ok, "reasons": reasons, **s, "missed": n_missed,
             "missed_offsets": missed, "behind": behind, "gap_ranges": c.gap_ranges,
             "duplicate_frames": c.duplicates}
        if args.records:
            d["predictions"] = c.records
        details.append(d)

    figures = {
        "command": "ws-clients",
        "url": args.url,
        "channels": args.channels,
        "started_at": started,
        "seconds": round(took, 3),
        "clients": len(clients),
        "clients_ok": sum(1 for p in per_client if p["ok"]),
        "clients_failed": sum(1 for p in per_client if not p["ok"]),
        "union_frames": sum(len(v) for v in union.values()),
        "frames_total": sum(c.frames for c in clients),
        "reconnects_total": sum(c.reconnects for c in clients),
        "recovered_total": sum(c.recovered for c in clients),
        "not_recovered_total": sum(c.not_recovered for c in clients),
        "duplicates_total": sum(c.n_duplicates for c in clients),
        "missed_total": sum(p["missed"] for p in per_client),
        "gaps_total": sum(p["gaps"] for p in per_client),
        "closes": dict(sum((Counter(c.closes) for c in clients), Counter())),
        "per_client": per_client,
        "out": args.out,
    }
    if len(failures) > LIST_LIMIT:
        failures = failures[:LIST_LIMIT] + [f"... and {len(failures) - LIST_LIMIT} more"]
    write_json(args.out, {"summary": {k: v for k, v in figures.items() if k != "per_client"},
                          "clients": details})
    return figures, failures


def game_deliveries(records: list[dict]) -> tuple[dict, Counter]:
    """Per channel, game -> the distinct (partition, offset) frames that
    carried it; and the count of (channel, partition, offset) received more
    than once."""
    frames: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    seen: Counter = Counter()
    for r in records:
        key = (r.get("channel"), r.get("partition"), r.get("offset"))
        seen[key] += 1
        if isinstance(r.get("game_id"), str):
            frames[r.get("channel")][r["game_id"]].add(key[1:])
    dups = Counter({k: n - 1 for k, n in seen.items() if n > 1})
    return frames, dups


def cmd_ws_report(args) -> tuple[dict, list[str]]:
    """Checks a ws-collect --out file after the fact (e.g. against the
    games a database says were played). For each channel in the file:
    every game of --expect-games (one id a line) must have a prediction
    frame; no (channel, partition, offset) may have been received twice;
    and each game must have come in exactly one prediction frame per
    channel (one prediction per game, delivered once), unless
    --allow-repeats (then repeated games are only counted), or, with
    --allow-redelivered, unless every frame of the game carries the same
    prediction (model version and probability): an at-least-once
    redelivery after a crash, counted as `redelivered`. With --no-gaps,
    the collect run's gaps and unrecovered resubscriptions fail too. Prints
    frames, games, missing / repeated / unexpected games (with the first of
    each listed) and the collect run's reconnect figures."""
    try:
        with open(args.input, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--in {args.input}: {e}") from e
    records = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise UsageError(f"--in {args.input}: not a ws-collect --out file (no 'predictions' list)")
    collect = doc.get("summary") or {}
    expected = read_games(args.expect_games) if args.expect_games else None
    frames, dups = game_deliveries(records)
    channels = collect.get("channels") or sorted(frames) or ["all"]
    failures: list[str] = []
    per_channel = {}
    for ch in channels:
        games = frames.get(ch, {})
        repeated = {g: sorted(f) for g, f in games.items() if len(f) > 1}
        redelivered = {}
        if args.allow_redelivered:
            contents = defaultdict(set)
            for r in records:
                if r.get("channel") == ch and r.get("game_id") in repeated:
                    contents[r["game_id"]].add((r.get("model_version"), r.get("home_win_prob")))
            redelivered = {g: f for g, f in repeated.items() if len(contents[g]) == 1}
            repeated = {g: f for g, f in repeated.items() if g not in redelivered}
        entry: dict = {
            "frames": sum(len(f) for f in games.values()),
            "games": len(games),
            "repeated_games": len(repeated),
            "repeated": [{"game_id": g, "frames": [list(x) for x in f]}
                         for g, f in list(repeated.items())[:LIST_LIMIT]],
            "redelivered_games": len(redelivered),
            "redelivered": [{"game_id": g, "frames": [list(x) for x in f]}
                            for g, f in list(redelivered.items())[:LIST_LIMIT]],
        }
        if repeated and not args.allow_repeats:
            failures.append(f"{ch}: {len(repeated)} games came in more than one frame: {list(repeated)[:10]}")
        if expected is not None:
            want = set(expected)
            missing = [g for g in expected if g not in games]
            unexpected = sorted(g for g in games if g not in want)
            entry.update({
                "expected_games": len(expected),
                "missing_games": len(missing),
                "missing": missing[:LIST_LIMIT],
                "unexpected_games": len(unexpected),
                "unexpected": unexpected[:LIST_LIMIT],
            })
            if missing:
                failures.append(f"{ch}: {len(missing)} of {len(expected)} expected games had no frame: {missing[:10]}")
        per_channel[ch] = entry
    n_dups = sum(dups.values())
    if n_dups:
        failures.append(f"{n_dups} frames received twice: {[list(k) for k in list(dups)[:5]]}")
    if args.no_gaps and collect.get("gaps_total"):
        failures.append(f"the collect run skipped {collect['gaps_total']} offsets: {collect.get('gaps')}")
    if args.no_gaps and collect.get("not_recovered"):
        failures.append(f"the collect run had {collect['not_recovered']} unrecovered resubscriptions")
    figures = {
        "command": "ws-report",
        "in": args.input,
        "frames": len(records),
        "duplicates": n_dups,
        "channels": per_channel,
        "collect": {k: collect.get(k) for k in (
            "seconds", "stopped_by", "reconnects", "recovered", "not_recovered",
            "gaps_total", "unrecovered_offsets", "closes", "connect_errors")},
    }
    return figures, failures


# --------------------------------------------------------------------------
# REST


class HttpTarget:
    """Requests to one base URL with http.client (no proxies, a timeout on
    every request). With `keep_alive`, each thread reuses one connection
    (dropped after any error, never retried); otherwise every request opens
    its own."""

    def __init__(self, base: str, token: str | None, timeout: float, keep_alive: bool = False):
        u = urllib.parse.urlsplit(base)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UsageError(f"--base {base!r}: expected http://host:port")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.headers = {"Accept": "application/json", "User-Agent": "stackcheck"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.local = threading.local()

    def _new_conn(self):
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float]:
        """(status, body, seconds); raises OSError / http.client.HTTPException
        on a transport error."""
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if not self.keep_alive:
            headers["Connection"] = "close"
        conn = getattr(self.local, "conn", None) if self.keep_alive else None
        if conn is None:
            conn = self._new_conn()
        start = time.monotonic()
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            conn.close()
            self.local.conn = None
            raise
        took = time.monotonic() - start
        if self.keep_alive and not resp.will_close:
            self.local.conn = conn
        else:
            conn.close()
            self.local.conn = None
        return resp.status, data, took


def error_kind(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(e, ConnectionResetError):
        return "connection_reset"
    return type(e).__name__


def valid_prob(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def cmd_rest_predictions(args) -> tuple[dict, list[str]]:
    """GET /v1/predictions/<game_id> (the predictor's latest stream
    prediction of the game, Redis then Postgres) for each game in --games
    (one id a line, or a ws-collect --out file), --concurrency at a time,
    each bounded by --timeout, all by --seconds (games not asked by then
    count as failures). Passes when every game answers 200 with a JSON
    Prediction whose game_id is the one asked and home_win_prob is in
    [0, 1]. Prints counts by status, transport errors, bad bodies, latency
    p50/p99 and the model versions seen."""
    games = read_games(args.games)
    if not games:
        raise UsageError(f"{args.games}: no game ids")
    target = HttpTarget(args.base, token_from_args(args), args.timeout, keep_alive=args.keep_alive)
    deadline = time.monotonic() + args.seconds
    statuses: Counter = Counter()
    errors: Counter = Counter()
    versions: Counter = Counter()
    latencies: list[float] = []
    bad: list[dict] = []
    lock = threading.Lock()

    def one(game: str):
        if time.monotonic() >= deadline:
            with lock:
                errors["not_attempted"] += 1
                bad.append({"game_id": game, "error": "not attempted before --seconds"})
            return
        path = "/v1/predictions/" + urllib.parse.quote(game, safe="")
        try:
            status, body, took = target.request("GET", path)
        except (OSError, http.client.HTTPException) as e:
            with lock:
                errors[error_kind(e)] += 1
                bad.append({"game_id": game, "error": f"{error_kind(e)}: {e}"})
            return
        problem = None
        if status != 200:
            problem = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
        else:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                problem = "the body is not a JSON object"
            elif doc.get("game_id") != game:
                problem = f"game_id {doc.get('game_id')!r} in the answer"
            elif not valid_prob(doc.get("home_win_prob")):
                problem = f"home_win_prob {doc.get('home_win_prob')!r} not in [0, 1]"
            else:
                with lock:
                    versions[str(doc.get("model_version"))] += 1
        with lock:
            statuses[str(status)] += 1
            latencies.append(took)
            if problem:
                bad.append({"game_id": game, "status": status, "error": problem})

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(one, games))
    took = time.monotonic() - start
    ok = len(games) - len(bad)
    figures = {
        "command": "rest-predictions",
        "base": args.base,
        "games": len(games),
        "ok": ok,
        "failed": len(bad),
        "statuses": dict(statuses),
        "transport_errors": dict(errors),
        "latency_ms": latency_figures(latencies),
        "model_versions": dict(versions),
        "seconds": round(took, 3),
        "failures": bad[:LIST_LIMIT],
    }
    failures = []
    if bad:
        failures.append(f"{len(bad)} of {len(games)} games did not answer 200 with a valid prediction; first: {bad[:5]}")
    return figures, failures


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (also when the shell started us with
    SIGINT ignored, as it does for background jobs)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def active_model(target: HttpTarget, wait: float, stop: threading.Event) -> dict:
    """GET /v1/models/active until it answers 200 (a model is loaded) or
    `wait` seconds pass."""
    end = time.monotonic() + wait
    last = "no answer"
    while not stop.is_set():
        try:
            status, body, _ = target.request("GET", "/v1/models/active")
            if status == 200:
                return json.loads(body)
            last = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
            if status in (401, 403):
                break
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = f"{error_kind(e)}: {e}"
        if time.monotonic() >= end:
            break
        stop.wait(min(1.0, max(0.0, end - time.monotonic())))
    raise CheckError(f"GET /v1/models/active: {last} (after --wait-model {wait}s)")


class CheckError(Exception):
    """The check cannot even start (e.g. no model): exit 1."""


def cmd_predict_load(args) -> tuple[dict, list[str]]:
    """A steady open-loop load of POST /v1/predict for --seconds at --rate
    requests per second: request i is due at start + i/rate and is sent by
    one of --concurrency worker threads (a worker busy past the due time
    sends it late; the largest lateness is reported, so a stalled service
    shows up instead of silently lowering the rate). The body is
    ``{"features": [...]}`` with n_features values in [-1, 1], n_features
    from GET /v1/models/active (waiting up to --wait-model for a model) or
    --n-features. A request succeeds when it answers 2xx with a
    home_win_prob in [0, 1]. Prints the total, failures by status, transport
    errors (timeouts, resets, refusals), bad bodies, latency p50/p99, model
    versions seen (a hot swap shows as two); --out FILE writes every
    request (t, status or error, latency, model version). Fails on any
    failed request unless --allow-failures (and when nothing was sent).

    SIGINT or SIGTERM ends the load early, as a normal end (``kill -INT``
    from a script, even for a background job whose SIGINT the shell
    ignores): no new request is sent, those in flight finish (each bounded
    by --timeout), and the figures cover what was sent (`stopped_by`:
    "signal")."""
    stop = threading.Event()
    install_stop_handlers(stop)
    target = HttpTarget(args.base, token_from_args(args), args.timeout, keep_alive=args.keep_alive)
    if args.n_features:
        n_features, model = args.n_features, None
    else:
        model = active_model(target, args.wait_model, stop)
        n_features = model.get("n_features")
        if not isinstance(n_features, int) or n_features <= 0:
            raise CheckError(f"GET /v1/models/active has no usable n_features: {model}")
    rng = random.Random(args.seed)
    bodies = [
        json.dumps({"features": [round(rng.uniform(-1, 1), 4) for _ in range(n_features)]}).encode()
        for _ in range(64)
    ]

    total = int(args.seconds * args.rate)
    lock = threading.Lock()
    next_ticket = [0]
    sent = [0]
    results: list[dict] = []
    start = time.monotonic() + 0.05

    def worker():
        while not stop.is_set():
            with lock:
                i = next_ticket[0]
                next_ticket[0] += 1
            if i >= total:
                return
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            with lock:
                sent[0] += 1
            late = max(0.0, time.monotonic() - due)
            rec: dict = {"i": i, "t": round(due - start, 4), "late_ms": round(late * 1000, 2)}
            try:
                status, body, took = target.request("POST", "/v1/predict", bodies[i % len(bodies)])
                rec["status"] = status
                rec["latency_ms"] = round(took * 1000, 2)
                if 200 <= status < 300:
                    try:
                        doc = json.loads(body)
                    except ValueError:
                        doc = None
                    if isinstance(doc, dict) and valid_prob(doc.get("home_win_prob")):
                        rec["model_version"] = doc.get("model_version")
                    else:
                        rec["error"] = "bad_body"
                else:
                    rec["error"] = f"http_{status}"
                    rec["body"] = body[:200].decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as e:
                rec["error"] = error_kind(e)
                rec["detail"] = str(e)[:200]
            with lock:
                results.append(rec)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    hard = start + args.seconds + args.timeout + 5
    # Joined in short steps: the main thread runs the signal handlers.
    while any(t.is_alive() for t in threads) and time.monotonic() < hard:
        for t in threads:
            t.join(0.1)
    took = time.monotonic() - start
    with lock:
        done = sorted(results, key=lambda r: r["i"])
        unfinished = sent[0] - len(done)

    statuses = Counter(str(r["status"]) for r in done if "status" in r)
    non_2xx = Counter(str(r["status"]) for r in done if "status" in r and not 200 <= r["status"] < 300)
    transport = Counter(r["error"] for r in done if "status" not in r)
    bad_body = sum(1 for r in done if r.get("error") == "bad_body")
    failed = [r for r in done if "error" in r]
    lat = [r["latency_ms"] / 1000 for r in done if "latency_ms" in r]
    figures = {
        "command": "predict-load",
        "base": args.base,
        "n_features": n_features,
        "model_at_start": model.get("version") if model else None,
        "planned": total,
        "stopped_by": "signal" if stop.is_set() else "seconds",
        "total": len(done),
        "unfinished": unfinished,
        "ok": len(done) - len(failed),
        "failed": len(failed),
        "statuses": dict(statuses),
        "non_2xx": dict(non_2xx),
        "transport_errors": dict(transport),
        "bad_body": bad_body,
        "latency_ms": latency_figures(lat),
        "late_ms_max": max((r["late_ms"] for r in done), default=None),
        "rate_target": args.rate,
        "rate_achieved": round(len(done) / took, 2) if took > 0 else None,
        "seconds": round(took, 3),
        "model_versions": dict(Counter(r["model_version"] for r in done if "model_version" in r)),
        "failures": [
            {k: r[k] for k in ("t", "status", "error", "detail", "body") if k in r}
            for r in failed[:LIST_LIMIT]
        ],
    }
    if args.out:
        write_json(args.out, {"summary": figures, "requests": done})
        figures["out"] = args.out
    failures = []
    if not done:
        failures.append("no request completed")
    if (failed or unfinished) and not args.allow_failures:
        failures.append(
            f"{len(failed)} of {len(done)} requests failed (non-2xx {dict(non_2xx)}, "
            f"transport {dict(transport)}, bad bodies {bad_body}), {unfinished} unfinished"
        )
    return figures, failures


# --------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    auth = argparse.ArgumentParser(add_help=False)
    auth.add_argument("--jwt-secret-file", metavar="F",
                      help="HS256 key file (JWT_SECRET_FILE); without it no token is sent")
    auth.add_argument("--sub", default="stackcheck", help="the token's sub claim (default %(default)s)")
    auth.add_argument("--token-ttl", type=positive(int), default=3600, metavar="S",
                      help="token lifetime in seconds (default %(default)s)")

    ws = argparse.ArgumentParser(add_help=False)
    ws.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/v1/stream")
    ws.add_argument("--channels", default="all", help="comma list of channels (default %(default)s)")
    ws.add_argument("--seconds", type=positive(float), required=True, help="how long to run")
    ws.add_argument("--idle", type=non_negative_float, default=0, metavar="S",
                    help="stop after S seconds without a prediction frame once one arrived (0: never)")
    ws.add_argument("--no-gaps", action="store_true",
                    help="fail on skipped offsets (meaningful on channel all)")
    ws.add_argument("--min-frames", type=int, default=1, metavar="N",
                    help="fail with fewer prediction frames than N (default %(default)s)")
    ws.add_argument("--token-in-query", action="store_true",
                    help="send the token as ?token= instead of Authorization: Bearer")
    ws.add_argument("--min-backoff", type=positive(float), default=0.1, metavar="S",
                    help="first reconnect delay (default %(default)s)")
    ws.add_argument("--max-backoff", type=positive(float), default=2.0, metavar="S",
                    help="longest reconnect delay (default %(default)s)")
    ws.add_argument("--open-timeout", type=positive(float), default=5.0, metavar="S",
                    help="bound on one connection's handshake (default %(default)s)")
    ws.add_argument("--out", required=True, metavar="FILE", help="JSON file to write")

    rest = argparse.ArgumentParser(add_help=False)
    rest.add_argument("--base", required=True, help="http://127.0.0.1:PORT (the predictor)")
    rest.add_argument("--timeout", type=positive(float), default=5.0, metavar="S",
                      help="bound on one request (default %(default)s)")
    rest.add_argument("--keep-alive", action="store_true",
                      help="reuse one connection per worker (default: a connection per request)")

    p = argparse.ArgumentParser(prog="stackcheck.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    c = sub.add_parser("ws-collect", parents=[auth, ws], help="one recording WebSocket client",
                       description=inspect.cleandoc(cmd_ws_collect.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--expect-games", metavar="FILE",
                   help="game ids (one a line) that must each get a prediction frame")
    c.set_defaults(func=cmd_ws_collect)

    c = sub.add_parser("ws-clients", parents=[auth, ws], help="N WebSocket clients at once",
                       description=inspect.cleandoc(cmd_ws_clients.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--clients", type=positive(int), required=True, metavar="N")
    c.add_argument("--stagger", type=non_negative_float, default=0.02, metavar="S",
                   help="delay between client starts (default %(default)s)")
    c.add_argument("--records", action="store_true", help="write every frame of every client to --out")
    c.set_defaults(func=cmd_ws_clients)

    c = sub.add_parser("ws-report", help="check a ws-collect --out file",
                       description=inspect.cleandoc(cmd_ws_report.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--in", dest="input", required=True, metavar="FILE", help="a ws-collect --out file")
    c.add_argument("--expect-games", metavar="FILE", help="game ids (one a line) that must each have a frame")
    c.add_argument("--allow-repeats", action="store_true",
                   help="a game in more than one frame (per channel) is counted, not a failure")
    c.add_argument("--allow-redelivered", action="store_true",
                   help="a game in more than one frame, each with the same prediction, is counted, not a failure")
    c.add_argument("--no-gaps", action="store_true",
                   help="fail on the collect run's gaps and unrecovered resubscriptions")
    c.set_defaults(func=cmd_ws_report)

    c = sub.add_parser("rest-predictions", parents=[auth, rest], help="GET /v1/predictions/<game>",
                       description=inspect.cleandoc(cmd_rest_predictions.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--games", required=True, metavar="FILE",
                   help="game ids, one a line, or a ws-collect --out file")
    c.add_argument("--concurrency", type=positive(int), default=8, metavar="N")
    c.add_argument("--seconds", type=positive(float), default=60.0, metavar="S",
                   help="bound on the whole run (default %(default)s)")
    c.set_defaults(func=cmd_rest_predictions)

    c = sub.add_parser("predict-load", parents=[auth, rest], help="steady POST /v1/predict load",
                       description=inspect.cleandoc(cmd_predict_load.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--seconds", type=positive(float), required=True, metavar="S")
    c.add_argument("--rate", type=positive(float), default=50.0, metavar="R",
                   help="requests per second (default %(default)s)")
    c.add_argument("--concurrency", type=positive(int), default=8, metavar="C",
                   help="worker threads (default %(default)s)")
    c.add_argument("--n-features", type=positive(int), metavar="N",
                   help="feature count (default: n_features of GET /v1/models/active)")
    c.add_argument("--wait-model", type=non_negative_float, default=30.0, metavar="S",
                   help="how long to wait for a model to be loaded (default %(default)s)")
    c.add_argument("--allow-failures", action="store_true", help="report failed requests, exit 0")
    c.add_argument("--seed", type=int, default=1, help="seed of the feature values")
    c.add_argument("--out", metavar="FILE", help="write every request to this JSON file")
    c.set_defaults(func=cmd_predict_load)

    c = sub.add_parser("token", parents=[auth], help="print a JWT for curl",
                       description=inspect.cleandoc(cmd_token.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--admin", action="store_true", help="admin: true")
    c.add_argument("--channels", metavar="LIST", help="channels claim, comma list (sport:nba,game:*)")
    c.add_argument("--json", action="store_true", help="print {token, claims}")
    c.set_defaults(func=cmd_token)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "rate", None) is not None and args.rate > 5000:
        print("stackcheck: --rate: at most 5000", file=sys.stderr)
        return 2
    if getattr(args, "concurrency", None) is not None and args.concurrency > 256:
        print("stackcheck: --concurrency: at most 256", file=sys.stderr)
        return 2
    try:
        figures, failures = args.func(args)
    except UsageError as e:
        print(f"stackcheck: {e}", file=sys.stderr)
        return 2
    except CheckError as e:
        print(json.dumps({"command": args.command, "error": str(e)}))
        print(f"stackcheck: FAIL: {e}", file=sys.stderr)
        return 1
    if isinstance(figures, str):
        print(figures)
    else:
        print(json.dumps(figures))
    for reason in failures:
        print(f"stackcheck: FAIL: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
