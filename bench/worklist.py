"""Worklist and claim under load: 100,000 cases in PostgreSQL, 200 concurrent reader clients.

Run: python bench/worklist.py --cases 100000 --clients 200 --duration 30 [--hubs 2]

What it does (figures for docs/benchmarks.md, "Issue 5: worklist and claim"):
1. Seeds a fresh database ``telehub_bench_<random>`` (bench/seed_cases.py) and starts real
   hubs (``python -m telehub serve``, embedded filesystem broker, temporary data folder, free
   ports) on it: one by default, ``--hubs 2`` for two HTTP processes (clients split between
   them).
2. Logs every client in over HTTP as its own reader account (aiohttp, one session each).
3. Open loop, ``--duration`` s: each client refreshes its worklist (GET /api/v1/worklist
   ?limit=50) on its own timer, every 1-2 s (uniform), whether or not the previous answer came
   back (a browser tab on a timer), so slow answers do not slow the offered load (about
   clients / 1.5 requests/s). The first ``--warmup`` s are not counted. Then the same with the
   first 25, 50, 100 clients (``--sweep``), to show where the hub saturates.
4. A closed loop of 32 clients under two py-spy recorders (``--profile`` s; not counted): CPU
   per request by part (token lookup, query and ORM loading, summary, audit, JSON, aiohttp),
   once holding the GIL and once for active threads.
5. Closed loop, ``--closed`` s: every client asks again the moment it has its answer
   (saturation: the hub's throughput ceiling and the latency it costs).
6. Claims: every client takes ``--claims`` cases from its worklist, one after another (think
   time 0.5-1 s): refresh the worklist, claim one of the five most urgent unclaimed cases.
   Then ``--races`` rounds in which all clients claim the top case of their list at once
   (readers of one centre race for the same case). 200s and 409s are counted and checked: no
   case has two winners over HTTP, and in the database each won case has exactly one claim
   event and the winner as its reader.
7. In-process, on one connection: the statements the worklist service issues, its Python and
   PostgreSQL CPU per call, EXPLAIN (ANALYZE, BUFFERS) of its main query for one reader per
   centre with its timing alone, the same with each index dropped (rolled back), and the
   token lookup and claim services alone.
Every phase also reports the hub process's CPU per request and how busy the whole machine was.
Latency is measured from just before the request is sent to the last byte of the answer; the
load generator runs on the same machine as the hub and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import inspect
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from bench.seed_cases import (  # noqa: E402
    BENCH_PASSWORD,
    PG_ADMIN_URL,
    create_database,
    drop_database,
    seed,
)
from telehub.config import Settings  # noqa: E402
from telehub.db import Database  # noqa: E402
from tests.helpers import Hub, start_hub  # noqa: E402

#: Seconds between one client's worklist refreshes in the open loop (``--refresh``).
REFRESH: tuple[float, float] = (1.0, 2.0)
#: Seconds a client waits after a claim before its next one (``--claim-think``).
CLAIM_THINK: tuple[float, float] = (0.5, 1.0)
WORKLIST = "/api/v1/worklist?limit=50"


# ----- measurements --------------------------------------------------------------------------
@dataclass
class Series:
    """Latencies (seconds) and outcomes of one kind of request in one phase."""

    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    #: the first few unexpected answers, for the report
    samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: every answer received, warm-up included (for CPU per request)
    completed: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)

    def add(self, latency: float, status: int) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1

    def row(self) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([0.0])
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {
            "what": self.name,
            "requests": len(self.latencies),
            "ok": ok,
            "statuses": dict(self.statuses),
            "errors": len(self.errors) + sum(n for s, n in self.statuses.items() if s >= 500),
            "unexpected": (self.errors + self.samples)[:5],
            "req_per_s": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "max_ms": round(float(lat.max()), 1),
            **self.cpu,
        }


TABLE = (
    "what",
    "requests",
    "req_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "statuses",
    "hub_cpu_ms_per_req",
    "machine_busy_pct",
    "load_1m",
)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print("| " + " | ".join(TABLE) + " |")
    print("| " + " | ".join("---" for _ in TABLE) + " |")
    for r in rows:
        print("| " + " | ".join(str(r.get(h, "")) for h in TABLE) + " |")


# ----- CPU accounting ------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


class CpuMeter:
    """CPU the HTTP hub processes used in a phase, and how busy the whole machine was (other
    work on a shared machine shows here). PostgreSQL's share is measured in-process on one
    connection (``sql_profile``): under load the pool opens and closes overflow connections,
    whose backends' CPU would be lost."""

    def __init__(self, hub_pids: Sequence[int]) -> None:
        self.hub_pids = list(hub_pids)

    def start(self) -> None:
        self._hub = {p: _proc_cpu(p) for p in self.hub_pids}
        self._machine = _machine_ticks()
        self._load = os.getloadavg()[0]

    def stop(self, requests: int) -> dict[str, Any]:
        hub = sum(_proc_cpu(p) - t for p, t in self._hub.items())
        busy, total = _machine_ticks()
        n = max(1, requests)
        return {
            "hub_cpu_ms_per_req": round(hub * 1000 / n, 2),
            "machine_busy_pct": round(
                100 * (busy - self._machine[0]) / max(1, total - self._machine[1])
            ),
            "load_1m": round(max(self._load, os.getloadavg()[0]), 1),
        }


# ----- clients -------------------------------------------------------------------------------
@dataclass
class Client:
    username: str
    user_id: int
    centre_id: int
    base_url: str
    session: aiohttp.ClientSession | None = None
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def login(self) -> None:
        self.session = aiohttp.ClientSession(
            self.base_url,
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=4),
        )
        body = {"username": self.username, "password": BENCH_PASSWORD}
        async with self.session.post("/api/v1/auth/login", json=body) as resp:
            data = await resp.json()
            assert resp.status == 200, data
            self.token = data["token"]

    async def timed(self, method: str, path: str) -> tuple[float, int, bytes]:
        assert self.session is not None
        start = time.perf_counter()
        async with self.session.request(method, path, headers=self.headers) as resp:
            body = await resp.read()
        return time.perf_counter() - start, resp.status, body

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def login_all(clients: Sequence[Client], parallel: int = 8) -> float:
    gate = asyncio.Semaphore(parallel)

    async def one(c: Client) -> None:
        async with gate:
            await c.login()

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    return time.perf_counter() - start


async def worklist_open_loop(
    clients: Sequence[Client], duration: float, warmup: float, rng: random.Random
) -> Series:
    """Each client on its own 1-2 s timer; a refresh is sent when due even if the previous one
    has not come back."""
    lo, hi = REFRESH
    series = Series(f"worklist, open loop ({lo:g}-{hi:g} s per client)")
    t0 = time.perf_counter()
    counted_from, end = t0 + warmup, t0 + warmup + duration
    pending: set[asyncio.Task[None]] = set()

    async def fetch(c: Client) -> None:
        started = time.perf_counter()
        try:
            latency, status, _ = await c.timed("GET", WORKLIST)
            series.completed += 1
            if started >= counted_from:
                series.add(latency, status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if started >= counted_from:
                series.errors.append(repr(exc))

    async def timer(c: Client, first: float) -> None:
        due = t0 + first
        while due < end:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(fetch(c))
            pending.add(task)
            task.add_done_callback(pending.discard)
            due += rng.uniform(lo, hi)

    await asyncio.gather(*(timer(c, rng.uniform(0, hi)) for c in clients))
    if pending:
        await asyncio.gather(*pending)
    series.seconds = duration
    return series


async def worklist_closed_loop(clients: Sequence[Client], duration: float) -> Series:
    """Every client asks again as soon as it has its answer: the saturation figure."""
    series = Series("worklist, closed loop (no think time)")
    end = time.perf_counter() + duration

    async def loop(c: Client) -> None:
        while time.perf_counter() < end:
            try:
                latency, status, _ = await c.timed("GET", WORKLIST)
                series.add(latency, status)
                series.completed += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                series.errors.append(repr(exc))

    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    series.seconds = time.perf_counter() - start
    return series


@dataclass
class ClaimOutcome:
    claims: Series
    lists: Series
    #: case id -> usernames that got 200 for it
    winners: dict[int, list[str]]
    wrong_reader_in_answer: int


async def claim_round(
    clients: Sequence[Client], claims_per_client: int, rng: random.Random
) -> ClaimOutcome:
    claims = Series("claim (POST /cases/{id}/claim)")
    lists = Series("worklist, during the claims")
    winners: dict[int, list[str]] = collections.defaultdict(list)
    wrong = 0

    async def reader(c: Client) -> None:
        nonlocal wrong
        # Readers start at random moments over one think time, not all in the same second.
        await asyncio.sleep(rng.uniform(0, CLAIM_THINK[1]))
        for _ in range(claims_per_client):
            try:
                latency, status, body = await c.timed("GET", WORKLIST)
                lists.add(latency, status)
                if status != 200:
                    continue
                waiting = [
                    case["id"]
                    for case in json.loads(body)["cases"]
                    if case["status"] == "routed" and case["reader"] is None
                ]
                if not waiting:
                    break
                case_id = rng.choice(waiting[:5])
                latency, status, body = await c.timed("POST", f"/api/v1/cases/{case_id}/claim")
                claims.add(latency, status)
                claims.completed += 1
                if status == 200:
                    winners[case_id].append(c.username)
                    answer = json.loads(body)
                    if (answer.get("reader") or {}).get("id") != c.user_id:
                        wrong += 1
                elif status != 409 and len(claims.samples) < 5:
                    claims.samples.append(f"{status}: {body[:300]!r}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                claims.errors.append(repr(exc))
            await asyncio.sleep(rng.uniform(*CLAIM_THINK))

    start = time.perf_counter()
    await asyncio.gather(*(reader(c) for c in clients))
    claims.seconds = lists.seconds = time.perf_counter() - start
    return ClaimOutcome(claims, lists, dict(winners), wrong)


async def claim_races(
    clients: Sequence[Client], rounds: int, outcome: ClaimOutcome
) -> tuple[Series, int]:
    """All clients at once: each fetches its worklist, then, when every list is in, all claim
    the most urgent unclaimed case on their own list at the same instant. Readers of one centre
    (about 17 of them) race for the same case; exactly one may win it. Returns the claims and
    how many distinct cases were raced for."""
    races = Series("claim race (all clients at once)")
    raced_for = 0

    async def look(c: Client, targets: dict[str, int]) -> None:
        latency, status, body = await c.timed("GET", WORKLIST)
        outcome.lists.add(latency, status)
        outcome.lists.completed += 1
        if status != 200:
            return
        waiting = [
            case["id"]
            for case in json.loads(body)["cases"]
            if case["status"] == "routed" and case["reader"] is None
        ]
        if waiting:
            targets[c.username] = waiting[0]

    async def take(c: Client, case_id: int) -> None:
        try:
            latency, status, body = await c.timed("POST", f"/api/v1/cases/{case_id}/claim")
        except (aiohttp.ClientError, TimeoutError) as exc:
            races.errors.append(repr(exc))
            return
        races.add(latency, status)
        races.completed += 1
        if status == 200:
            outcome.winners.setdefault(case_id, []).append(c.username)
            if (json.loads(body).get("reader") or {}).get("id") != c.user_id:
                outcome.wrong_reader_in_answer += 1
        elif status != 409 and len(races.samples) < 5:
            races.samples.append(f"{status}: {body[:300]!r}")

    start = time.perf_counter()
    for _ in range(rounds):
        targets: dict[str, int] = {}
        await asyncio.gather(*(look(c, targets) for c in clients))
        await asyncio.gather(
            *(take(c, targets[c.username]) for c in clients if c.username in targets)
        )
        raced_for += len(set(targets.values()))
    races.seconds = time.perf_counter() - start
    return races, raced_for


def check_claims_in_db(url: str, outcome: ClaimOutcome, user_ids: dict[str, int]) -> dict[str, int]:
    """Each case won over HTTP: one winner, one claim event, the winner as its reader."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            ids = list(outcome.winners)
            rows = conn.execute(
                text(
                    "SELECT c.id, c.reader_id, count(e.id) FROM cases c"
                    " LEFT JOIN case_events e ON e.case_id = c.id AND e.kind = 'claimed'"
                    " WHERE c.id = ANY(:ids) GROUP BY c.id, c.reader_id"
                ),
                {"ids": ids},
            ).all()
    finally:
        db.dispose()
    multi_http = sum(1 for names in outcome.winners.values() if len(set(names)) > 1)
    events = {r[0]: r[2] for r in rows}
    readers = {r[0]: r[1] for r in rows}
    multi_event = sum(1 for i in ids if events.get(i, 0) != 1)
    wrong_reader = sum(1 for i in ids if readers.get(i) != user_ids[outcome.winners[i][0]])
    return {
        "cases_won": len(ids),
        "cases_with_two_http_winners": multi_http,
        "cases_without_exactly_one_claim_event": multi_event,
        "cases_whose_reader_is_not_the_winner": wrong_reader,
        "answers_naming_another_reader": outcome.wrong_reader_in_answer,
    }


# ----- py-spy --------------------------------------------------------------------------------
#: (category, predicate over a collapsed stack) in the order they are tried.
CATEGORIES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("auth: token lookup", lambda s: "authenticate (telehub/auth.py" in s),
    ("claim service", lambda s: "claim (telehub/cases.py" in s),
    (
        "worklist: audit insert + commit",
        lambda s: "worklist (telehub/worklist.py" in s and ("audit.py" in s or "commit (" in s),
    ),
    ("worklist: summary() incl. lazy loads", lambda s: "summary (telehub/cases.py" in s),
    ("worklist: query + ORM loading", lambda s: "worklist (telehub/worklist.py" in s),
    ("JSON encoding of the answer", lambda s: "json_response (" in s or "dumps (" in s),
    ("aiohttp + event loop", lambda s: "aiohttp" in s or "asyncio" in s),
)
DRIVER = ("psycopg", "do_execute (", "_exec_single_context")


def profile_summary(raw_path: Path, rate: int, requests: int) -> list[dict[str, Any]]:
    """CPU per request by category from py-spy's collapsed stacks (active threads only)."""
    totals: collections.Counter[str] = collections.Counter()
    in_driver: collections.Counter[str] = collections.Counter()
    all_samples = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        all_samples += count
        name = next((n for n, pred in CATEGORIES if pred(stack)), "other (relay, GC, threads)")
        totals[name] += count
        if any(d in stack for d in DRIVER):
            in_driver[name] += count
    rows = []
    for name, count in totals.most_common():
        rows.append(
            {
                "category": name,
                "share_pct": round(100 * count / max(1, all_samples), 1),
                "ms_per_request": round(count / rate * 1000 / max(1, requests), 2),
                "of_which_in_sql_driver_pct": round(100 * in_driver[name] / count, 0),
            }
        )
    return rows


def top_frames(raw_path: Path, limit: int = 15) -> list[tuple[str, int]]:
    """The leaf functions that took most samples (self time)."""
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            leaves[stack.rsplit(";", 1)[-1]] += int(count_text)
    return leaves.most_common(limit)


# ----- SQL alone -----------------------------------------------------------------------------
def _plan_nodes(node: dict[str, Any], out: list[str]) -> None:
    label = node["Node Type"]
    if "Index Name" in node:
        label += f" {node['Index Name']}"
    elif "Relation Name" in node:
        label += f" {node['Relation Name']}"
    out.append(label)
    for child in node.get("Plans", []):
        _plan_nodes(child, out)


def _shape(statement: str) -> str:
    """A statement reduced to what it does, to count repeats (N+1 loads)."""
    words = " ".join(statement.split())
    verb = words.split(" ", 1)[0].upper()
    if verb == "SELECT" and " FROM " in words:
        rest = words.split(" FROM ", 1)[1]
        where = rest.split(" WHERE ", 1)[1][:60] if " WHERE " in rest else ""
        return f"SELECT FROM {rest.split(' ', 1)[0]} WHERE {where}"
    return words[:60]


def _explain(cur: Any, main: tuple[str, Any], runs: int = 5) -> tuple[float, list[str]]:
    """Median execution time (ms) of EXPLAIN ANALYZE over ``runs``, and the plan's nodes."""
    times, nodes = [], []
    for _ in range(runs):
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + main[0], main[1])
        plan = cur.fetchone()[0][0]
        times.append(plan["Execution Time"])
        nodes = []
        _plan_nodes(plan["Plan"], nodes)
    return round(float(np.median(times)), 3), nodes


def index_ablation(conn: Any, main: tuple[str, Any], nodes: list[str]) -> dict[str, Any]:
    """The main query with each index it used dropped, then with every ix_cases_* index
    dropped (each in a transaction that is rolled back): what each index is worth."""
    cur = conn.cursor()
    out: dict[str, Any] = {}
    ms, plan = _explain(cur, main)
    out["(as is)"] = {"execution_ms": ms, "plan": plan}
    conn.rollback()
    used = sorted(
        {n.split()[-1] for n in nodes if "Index" in n and n.split()[-1].startswith("ix_")}
    )
    cur.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'cases' AND indexname LIKE 'ix_%'"
    )
    every = [r[0] for r in cur.fetchall()]
    conn.rollback()
    for label, names in [*((n, [n]) for n in used), ("every ix_cases_* index", every)]:
        try:
            for name in names:
                cur.execute(f"DROP INDEX {name}")
            ms, plan = _explain(cur, main)
            out[label] = {"execution_ms": ms, "plan": plan}
        finally:
            conn.rollback()
    return out


def single_connection(url: str) -> Database:
    """A Database whose every session uses one connection, so one backend's CPU is the
    database's whole share of the work."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker
    from sqlalchemy.pool import StaticPool

    db = Database(url)
    db.engine.dispose()
    db.engine = create_engine(url, poolclass=StaticPool)
    db.sessions = sessionmaker(db.engine, expire_on_commit=False)
    return db


def _backend_pid(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


class Capture:
    """The SQL statements an engine sends while recording (to count and EXPLAIN them)."""

    def __init__(self, db: Database) -> None:
        self.statements: list[tuple[str, Any]] = []
        self._on = False
        event.listen(db.engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if self._on:
            self.statements.append((statement, parameters))

    @contextlib.contextmanager
    def recording(self) -> Any:
        self.statements.clear()
        self._on = True
        try:
            yield self.statements
        finally:
            self._on = False


def _ms(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.array(values) * 1000, q)), 3)


def sql_profile(url: str, clients: Sequence[Client], repeat: int) -> dict[str, Any]:
    """The worklist service called in-process (statements captured), and its main query alone:
    EXPLAIN (ANALYZE, BUFFERS) and repeated timing, for one reader of every centre; then the
    token lookup alone and the claim service in-process."""
    from telehub import auth
    from telehub import worklist as worklists

    db = single_connection(url)
    backend = _backend_pid(db)
    capture = Capture(db)
    result: dict[str, Any] = {"centres": [], "backend_pid": backend}
    one_per_centre: dict[int, Client] = {}
    for c in clients:
        one_per_centre.setdefault(c.centre_id, c)
    try:
        service_times: list[float] = []
        for c in one_per_centre.values():
            principal = auth.authenticate(db, c.token)
            with capture.recording() as recorded:
                answer = worklists.worklist(db, principal, "bench-sql", limit=50)
            items = answer["cases"] if isinstance(answer, dict) else answer
            statements = list(recorded)
            main = next(
                (
                    s
                    for s in statements
                    if s[0].lstrip().upper().startswith("SELECT") and "FROM cases" in s[0]
                ),
                None,
            )
            kinds = collections.Counter(s[0].split(None, 1)[0].upper() for s in statements)
            shapes = collections.Counter(_shape(s[0]) for s in statements)
            entry: dict[str, Any] = {
                "centre_id": c.centre_id,
                "reader": c.username,
                "items": len(items),
                "statements": dict(kinds),
                "statement_shapes": shapes.most_common(),
            }
            pg_before, cpu_before = _proc_cpu(backend), time.process_time()
            for _ in range(50):  # the whole service, warm
                start = time.perf_counter()
                worklists.worklist(db, principal, "bench-sql", limit=50)
                service_times.append(time.perf_counter() - start)
            entry["pg_cpu_ms_per_call"] = round((_proc_cpu(backend) - pg_before) * 1000 / 50, 2)
            entry["py_cpu_ms_per_call"] = round((time.process_time() - cpu_before) * 1000 / 50, 2)
            if main is not None:
                entry.update(explain_main(db, main, repeat))
                result.setdefault("main_sql", main[0])
            result["centres"].append(entry)
        result["service_p50_ms"] = _ms(service_times, 50)
        result["service_p99_ms"] = _ms(service_times, 99)
        # the bearer-token lookup every request pays, alone
        auth_times = []
        pg_before, cpu_before = _proc_cpu(backend), time.process_time()
        for _ in range(repeat):
            start = time.perf_counter()
            auth.authenticate(db, clients[0].token)
            auth_times.append(time.perf_counter() - start)
        result["auth_pg_cpu_ms"] = round((_proc_cpu(backend) - pg_before) * 1000 / repeat, 3)
        result["auth_py_cpu_ms"] = round((time.process_time() - cpu_before) * 1000 / repeat, 3)
        result["auth_p50_ms"] = _ms(auth_times, 50)
        result["auth_p99_ms"] = _ms(auth_times, 99)
        try:
            result.update(claim_profile(db, clients[0], capture))
        except Exception as exc:  # the claim code is being rewritten: report, don't stop
            result["claim_error"] = repr(exc)
    finally:
        db.dispose()
    return result


def explain_main(db: Database, main: tuple[str, Any], repeat: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the main query, its timing alone, and the ablation."""
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        cur = conn.cursor()
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + main[0], main[1])
        plan = cur.fetchone()[0][0]
        nodes: list[str] = []
        _plan_nodes(plan["Plan"], nodes)
        timings = []
        for _ in range(repeat):
            start = time.perf_counter()
            cur.execute(main[0], main[1])
            cur.fetchall()
            timings.append(time.perf_counter() - start)
        conn.rollback()
        without = index_ablation(conn, main, nodes)
    finally:
        raw.close()
    return {
        "plan": nodes,
        "execution_ms": plan["Execution Time"],
        "planning_ms": plan["Planning Time"],
        "shared_hit_blocks": plan["Plan"].get("Shared Hit Blocks"),
        "query_p50_ms": _ms(timings, 50),
        "query_p99_ms": _ms(timings, 99),
        "without_index": without,
    }


def claim_service() -> Callable[..., Any]:
    """Wherever the claim service lives now (it is moving out of telehub.cases)."""
    import importlib

    for module in ("telehub.assignment", "telehub.cases"):
        with contextlib.suppress(ImportError):
            fn = getattr(importlib.import_module(module), "claim", None)
            if fn is not None:
                return fn
    raise LookupError("no claim service in telehub.assignment or telehub.cases")


def claim_profile(db: Database, c: Client, capture: Capture) -> dict[str, Any]:
    """The claim service in-process: the statements of one claim, and up to 20 claims timed."""
    from telehub import auth

    service = claim_service()
    known = {"db": db, "settings": Settings.load(), "remote": "bench-sql"}

    def claim(db: Database, principal: Any, case_id: int, remote: str) -> Any:
        params = inspect.signature(service).parameters
        args = {n: v for n, v in known.items() if n in params}
        return service(**args, principal=principal, case_id=case_id)

    result: dict[str, Any] = {}
    with db.engine.connect() as conn:
        free = list(
            conn.execute(
                text(
                    "SELECT id FROM cases WHERE centre_id = :c AND status = 'routed'"
                    " AND reader_id IS NULL ORDER BY id LIMIT 20"
                ),
                {"c": c.centre_id},
            ).scalars()
        )
    principal = auth.authenticate(db, c.token)
    if not free:
        return {"claim_error": "no routed case left to claim in-process"}
    with capture.recording() as recorded:
        claim(db, principal, free[0], "bench-sql")
    result["claim_statements"] = collections.Counter(_shape(s[0]) for s in recorded).most_common()
    claim_times = []
    backend = _backend_pid(db)
    pg_before, cpu_before = _proc_cpu(backend), time.process_time()
    for case_id in free[1:]:
        start = time.perf_counter()
        claim(db, principal, case_id, "bench-sql")
        claim_times.append(time.perf_counter() - start)
    n = max(1, len(claim_times))
    result["claim_pg_cpu_ms"] = round((_proc_cpu(backend) - pg_before) * 1000 / n, 2)
    result["claim_py_cpu_ms"] = round((time.process_time() - cpu_before) * 1000 / n, 2)
    if claim_times:
        result["claim_service_p50_ms"] = _ms(claim_times, 50)
        result["claim_service_max_ms"] = round(max(claim_times) * 1000, 2)
    return result


# ----- the run -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.0f} GiB"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram": mem,
        "python": platform.python_version(),
    }


def pg_version() -> str:
    db = Database(PG_ADMIN_URL)
    try:
        with db.engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        db.dispose()


def _pyspy(pid: int, seconds: float, rate: int, out: Path, gil: bool) -> subprocess.Popen:
    command = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate)]
    command += ["-f", "raw", "-o", str(out), "--nonblocking"] + (["--gil"] if gil else [])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def profiled_phase(
    args: argparse.Namespace, hubs: Sequence[Hub], clients: list[Client]
) -> dict[str, Any]:
    """A closed loop of 32 clients (enough to keep the hub busy, few enough in flight that
    completions per window are exact to a few per cent) under two py-spy recorders on hub 1:
    ``--gil`` (the Python work that one process serialises) and active threads (which also
    counts threads waiting inside the SQL driver)."""
    rate = 100
    pid = hubs[0].proc.popen.pid
    raw_gil, raw_active = Path(args.tmp) / "pyspy-gil.txt", Path(args.tmp) / "pyspy-active.txt"
    spies = [
        _pyspy(pid, args.profile, rate, raw_gil, True),
        _pyspy(pid, args.profile, rate, raw_active, False),
    ]
    await asyncio.sleep(0.5)
    few = [c for c in clients if c.base_url == clients[0].base_url][:32]
    profiled = await worklist_closed_loop(few, args.profile - 1.0)
    for spy in spies:
        await asyncio.to_thread(spy.wait)
    served = len(profiled.latencies)
    out: dict[str, Any] = {"profiled_closed": profiled.row(), "profile_requests": served}
    for label, raw in (("gil", raw_gil), ("active", raw_active)):
        if not raw.exists():
            continue
        out[f"profile_{label}"] = profile_summary(raw, rate, served)
        out[f"profile_{label}_top"] = top_frames(raw)
        print(f"py-spy ({label}) on hub 1 over {served} worklist requests, 32 clients:")
        for r in out[f"profile_{label}"]:
            print(
                f"  {r['category']:<40} {r['share_pct']:5.1f} %  "
                f"{r['ms_per_request']:6.2f} ms/request  "
                f"({r['of_which_in_sql_driver_pct']:.0f} % in the SQL driver)"
            )
    return out


async def run_load(args: argparse.Namespace, hubs: Sequence[Hub], clients: list[Client]) -> dict:
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    took = await login_all(clients)
    print(f"{len(clients)} clients logged in over HTTP in {took:.1f} s")
    meter = CpuMeter([h.proc.popen.pid for h in hubs if h.proc.popen])

    async def measured(phase: Awaitable[Series], name: str = "") -> dict[str, Any]:
        meter.start()
        series = await phase
        series.cpu = meter.stop(series.completed)
        series.name = name or series.name
        print_table([series.row()])
        return series.row()

    try:
        results["open"] = await measured(
            worklist_open_loop(clients, args.duration, args.warmup, rng)
        )
        for n in args.sweep:
            if n < len(clients):
                part = worklist_open_loop(clients[:n], args.sweep_duration, args.warmup, rng)
                row = await measured(part, f"worklist, open loop, {n} clients")
                results.setdefault("sweep", []).append(row)
        if args.profile and shutil.which("py-spy"):
            results.update(await profiled_phase(args, hubs, clients))
        if args.closed:
            results["closed"] = await measured(worklist_closed_loop(clients, args.closed))
        if args.claims:
            meter.start()
            outcome = await claim_round(clients, args.claims, rng)
            outcome.claims.cpu = meter.stop(outcome.claims.completed + outcome.lists.completed)
            if args.races:
                races, raced_for = await claim_races(clients, args.races, outcome)
                results["claim_races"] = races.row()
                results["claim_races"]["cases_raced_for"] = raced_for
                print_table([results["claim_races"]])
            results["claims"] = outcome.claims.row()
            results["claim_lists"] = outcome.lists.row()
            results["claim_check"] = check_claims_in_db(
                args.url, outcome, {c.username: c.user_id for c in clients}
            )
            print_table([results["claims"], results["claim_lists"]])
            print("claim check:", results["claim_check"])
    finally:
        for c in clients:
            await c.close()
    return results


def _pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0, help="open-loop seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--closed", type=float, default=15.0, help="closed-loop seconds (0: no)")
    parser.add_argument("--claims", type=int, default=10, help="claims per client (0: none)")
    parser.add_argument("--races", type=int, default=3, help="rounds of all-at-once claims")
    parser.add_argument("--profile", type=float, default=20.0, help="py-spy seconds (0: none)")
    parser.add_argument(
        "--sweep",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[25, 50, 100],
        help="also run the open loop with these many clients (comma list; '' for none)",
    )
    parser.add_argument("--sweep-duration", type=float, default=15.0)
    parser.add_argument(
        "--claim-think",
        default="0.5,1",
        help="claim stream: seconds a client waits after a claim, LO,HI (a reader reads the "
        "case it claimed for minutes; 0.5,1 is a stress figure)",
    )
    parser.add_argument(
        "--refresh",
        default="1,2",
        help="open loop: seconds between a client's refreshes, LO,HI (uniform); a browser "
        "with the live event stream refreshes on events, so 5,10 is closer to real use",
    )
    parser.add_argument("--sql-repeat", type=int, default=200)
    parser.add_argument("--hubs", type=int, default=1, choices=(1, 2))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--name", default=f"telehub_bench_{uuid.uuid4().hex[:8]}")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args()
    global REFRESH, CLAIM_THINK
    REFRESH = _pair(args.refresh)
    CLAIM_THINK = _pair(args.claim_think)

    info = machine() | {"postgresql": pg_version(), "command": " ".join(sys.argv)}
    print(f"machine: {info}")
    start = time.perf_counter()
    args.url = create_database(args.admin_url, args.name)
    hubs: list[Hub] = []
    results: dict[str, Any] = {"machine": info}
    try:
        consortium, counts = seed(args.url, args.cases)
        results["seed"] = {"seconds": round(time.perf_counter() - start, 1), **counts}
        print(f"seeded {args.name} in {results['seed']['seconds']} s: {counts}")
        rng = random.Random(args.seed)
        accounts = rng.sample(consortium.readers, min(args.clients, len(consortium.readers)))
        with tempfile.TemporaryDirectory(prefix="telehub-bench-") as tmp:
            args.tmp = tmp
            env = {"TELEHUB_DATABASE_URL": args.url, "TELEHUB_LOG_LEVEL": "WARNING"}
            for i in range(args.hubs):
                hubs.append(start_hub(Path(tmp), env, name=f"hub{i + 1}"))
            urls = [f"http://127.0.0.1:{h.http_port}" for h in hubs]
            clients = [
                Client(name, uid, centre, urls[i % len(urls)])
                for i, (name, uid, centre) in enumerate(accounts)
            ]
            results.update(asyncio.run(run_load(args, hubs, clients)))
            if args.sql_repeat:
                results["sql"] = sql_profile(args.url, clients, args.sql_repeat)
                print_sql(results["sql"])
            for hub in hubs:
                hub.proc.stop()
            hubs.clear()
    finally:
        for hub in hubs:
            hub.proc.stop()
        if not args.keep:
            drop_database(args.admin_url, args.name)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print()
    keys = ("open", "closed", "claims", "claim_races", "claim_lists")
    print_table([*results.get("sweep", []), *(results[k] for k in keys if k in results)])


def print_sql(sql: dict[str, Any]) -> None:
    print(
        f"worklist service in-process (no HTTP, one connection): p50 {sql.get('service_p50_ms')}"
        f" ms, p99 {sql.get('service_p99_ms')} ms"
    )
    print(
        "  centre reader               items  SQL  CPU python / postgres  main query:"
        " EXPLAIN exec, alone p50 / p99 (ms)"
    )
    for e in sql["centres"]:
        n_sql = sum(e["statements"].values())
        print(
            f"  {e['centre_id']:>6} {e['reader']:<20} {e['items']:>5} {n_sql:>4}"
            f"  {e.get('py_cpu_ms_per_call'):>9} / {e.get('pg_cpu_ms_per_call'):<9}"
            f"  {e.get('execution_ms')}, {e.get('query_p50_ms')} / {e.get('query_p99_ms')}"
        )
    print(
        f"token lookup (auth.authenticate) in-process: p50 {sql.get('auth_p50_ms')} ms,"
        f" p99 {sql.get('auth_p99_ms')} ms (CPU python {sql.get('auth_py_cpu_ms')}, postgres"
        f" {sql.get('auth_pg_cpu_ms')} ms); claim service in-process: p50"
        f" {sql.get('claim_service_p50_ms')} ms, max {sql.get('claim_service_max_ms')} ms"
        f" (CPU python {sql.get('claim_py_cpu_ms')}, postgres {sql.get('claim_pg_cpu_ms')} ms)"
    )
    if "claim_error" in sql:
        print(f"  claim service: {sql['claim_error']}")
    for shape, n in sql.get("claim_statements", []):
        print(f"  claim: {n:>3} x {shape}")
    first = sql["centres"][0] if sql["centres"] else {}
    print(f"statements of one worklist call ({first.get('reader')}):")
    for shape, n in first.get("statement_shapes", []):
        print(f"  {n:>3} x {shape}")
    print("main query plan, and without each index it uses (EXPLAIN ANALYZE, median of 5):")
    for name, alt in first.get("without_index", {}).items():
        label = name if name.startswith("(") else f"without {name}"
        print(f"  {label}: {alt['execution_ms']} ms: {' > '.join(alt['plan'])}")


if __name__ == "__main__":
    main()
