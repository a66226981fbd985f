"""Consult media bench (issue 6): join to first remote frame, and concurrent recorded
two-party consults at 640x480 >= 15 frames/s, hub relay vs. direct media with the hub recording.

    python bench/consult_media.py [--seconds 10] [--max-consults 10]
        [--media forward,transcode] [--modes relay,direct] [--participants preencoded|live]

``--media``: the hub forwards the encoded media as received (telehub.media.forwarding, the
default) or decodes and re-encodes it per viewer and for the recording (the earlier design),
each with a fresh hub process in the same run. ``--participants preencoded`` (default for the
capacity rounds): participants send VP8/Opus packets encoded once and count the frames they
receive without decoding them, so two participant processes can load the hub with 8+ consults
on this 2-core machine; ``live`` encodes and decodes every frame (camera-like, but then the
participants, not the hub, run out of CPU first). Join times are always measured with live
participants (a pre-encoded stream has keyframes only every 2 s and cannot answer a PLI).

Processes: the hub's media layer (telehub.media.sessions behind a bench-only HTTP offer
endpoint, standing in for the signaling WebSocket) runs in one child process, the synthetic
participants in two others (one per core), so the hub's CPU is measured on its own
(/proc/<pid>/stat). Everything shares this machine's cores: the participants' own encoding and
decoding competes with the hub, so the sustained count is a floor for a hub on its own server.
Video: 640x480 at 15 frames/s, a moving box over a noise texture (camera-like for VP8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve()
TICKS = os.sysconf("SC_CLK_TCK")


# -- hub process ------------------------------------------------------------------------------
async def hub_main(port: int, work: Path, forward: bool) -> None:
    from telehub.media import sessions
    from telehub.store import FilesystemStore

    sessions.configure(
        store=FilesystemStore(work / "store"),
        work_dir=work / "tmp",
        ice_servers=[],
        forward=forward,
    )
    stored: list[tuple[int, str, float]] = []
    sessions.on_recording_stored = lambda c, k, d: stored.append((c, k, d))

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        answer = await sessions.handle_offer(
            body["consult"], body["participant"], body["sdp"], body["type"]
        )
        if body.get("record", True):  # recorded consults: consent is assumed given at join
            await sessions.set_recording(body["consult"], True)
        return web.json_response(answer)

    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        if body["op"] == "end":
            await asyncio.gather(*(sessions.end(c) for c in sessions.active()))
        return web.json_response({"stored": stored})

    app = web.Application()
    app.add_routes([web.post("/offer", offer), web.post("/control", control)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- participants process ---------------------------------------------------------------------
async def post(url: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        resp.raise_for_status()
        return await resp.json()


def hub_for(bases: str, consult: int) -> str:
    """Consults are sticky to one hub process (production: a consistent hash on the consult id
    at the load balancer); here consult id modulo the number of hubs."""
    urls = bases.split(",")
    return urls[consult % len(urls)]


async def hub_join(bases: str, consult: int, pid: int, slots: int):
    from telehub.media.synthetic import SyntheticParticipant

    client = SyntheticParticipant(
        40 + 80 * pid, slots, moving=True, preencoded=os.environ.get("BENCH_PREENCODED") == "1"
    )
    offer = await client.offer()
    base = hub_for(bases, consult)
    answer = await post(f"{base}/offer", {"consult": consult, "participant": pid, **offer})
    await client.accept(answer)
    return client


async def direct_pair(consult: int):
    """Two participants with media between them directly (the hub is not on this path)."""
    from telehub.media.synthetic import SyntheticParticipant

    pre = os.environ.get("BENCH_PREENCODED") == "1"
    a = SyntheticParticipant(40, 1, moving=True, preencoded=pre)
    b = SyntheticParticipant(200, 0, moving=True, answerer=True, preencoded=pre)
    await a.accept(await b.answer(await a.offer()))
    return a, b


def video_frames(client) -> int:
    return min((r.frames for r in client.received.values() if r.kind == "video"), default=0)


async def clients_main(base: str, mode: str, consults: list[int], seconds: float) -> None:
    clients = []
    if mode == "join":
        results = []
        for consult in consults:
            first = await hub_join(base, consult, 1, 1)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            second = await hub_join(base, consult, 2, 1)
            while video_frames(second) == 0 or video_frames(first) == 0:
                await asyncio.sleep(0.005)
            results.append(time.monotonic() - started)
            clients += [first, second]
        print(json.dumps({"join": results}), flush=True)
    else:
        for consult in consults:
            if mode == "relay":
                clients += [
                    await hub_join(base, consult, 1, 1),
                    await hub_join(base, consult, 2, 1),
                ]
            else:
                a, b = await direct_pair(consult)
                up_a = await hub_join(base, consult, 1, 0)
                up_b = await hub_join(base, consult, 2, 0)
                clients += [a, b, up_a, up_b]
        viewers = [c for c in clients if any(r.kind == "video" for r in c.received.values())]
        await asyncio.sleep(3)  # warm-up: ICE, DTLS, first keyframes, bitrate ramp
        print("steady", flush=True)
        counts = [video_frames(c) for c in viewers]
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        fps = [(video_frames(c) - n) / seconds for c, n in zip(viewers, counts, strict=True)]
        stuck = [c.pc.connectionState for c, f in zip(viewers, fps, strict=True) if f < 1]
        if stuck:
            print(f"viewers without video: connection states {stuck}", file=sys.stderr)
        cpu = (time.process_time() - cpu0) / seconds
        print(json.dumps({"fps": fps, "cpu": cpu}), flush=True)
        sys.stdin.readline()
    for client in clients:
        await client.close()


# -- orchestration ----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def spawn(*args: str, preencoded: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_PREENCODED": "1" if preencoded else "0"},
    )


def read_json(proc: subprocess.Popen) -> dict:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("child exited")
        if line.startswith("{"):
            return json.loads(line)


def run_round(
    base: str, hubs: list[subprocess.Popen], mode: str, n: int, seconds: float, preencoded: bool
) -> dict:
    """n consults in ``mode``, split over two participant processes; hub CPU over the window."""
    first = 1000 * n + (0 if mode == "relay" else 500)
    groups = [list(range(first + i, first + n, 2)) for i in (0, 1)]
    groups = [g for g in groups if g]
    procs = [
        spawn("--clients", base, mode, ",".join(map(str, g)), str(seconds), preencoded=preencoded)
        for g in groups
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "steady"
    hub0, t0 = sum(cpu_seconds(h.pid) for h in hubs), time.monotonic()
    results = [read_json(p) for p in procs]
    hub_cpu = (sum(cpu_seconds(h.pid) for h in hubs) - hub0) / (time.monotonic() - t0)
    for proc in procs:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    stored = [
        s
        for url in base.split(",")
        for s in post_sync(url, {"op": "end"})["stored"]
        if s[0] // 1000 == n
    ]
    fps = [f for r in results for f in r["fps"]]
    return {
        "mode": mode,
        "consults": n,
        "min_fps": min(fps),
        "mean_fps": sum(fps) / len(fps),
        "hub_cpu": hub_cpu,
        "hub_cpu_per_consult": hub_cpu / n,
        "clients_cpu": sum(r["cpu"] for r in results),
        "recordings": len(stored),
        "recorded_seconds": sum(s[2] for s in stored),
    }


def post_sync(base: str, body: dict) -> dict:
    return asyncio.run(post(f"{base}/control", body))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", type=int)
    parser.add_argument("--transcode", action="store_true")
    parser.add_argument("--clients", nargs=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-consults", type=int, default=10)
    parser.add_argument("--media", default="forward,transcode")
    parser.add_argument("--modes", default="relay,direct")
    parser.add_argument("--participants", choices=("preencoded", "live"), default="preencoded")
    parser.add_argument("--counts", default="1,2,4,6,8,10,12,16", help="consults per round")
    parser.add_argument(
        "--hub-processes", type=int, default=1, help="hub processes, consults sticky to one"
    )
    args = parser.parse_args()
    if args.hub:
        work = Path(tempfile.mkdtemp(prefix="media-bench-"))
        asyncio.run(hub_main(args.hub, work, forward=not args.transcode))
        return
    if args.clients:
        base, mode, consults, seconds = args.clients
        ids = [int(c) for c in consults.split(",")]
        asyncio.run(clients_main(base, mode, ids, float(seconds)))
        return
    print(
        f"participants: {args.participants}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for media in args.media.split(","):
        bench_hub(media, args)


def bench_hub(media: str, args: argparse.Namespace) -> None:
    ports = [18765 + i for i in range(args.hub_processes)]
    flags = ["--transcode"] if media == "transcode" else []
    hubs = [spawn("--hub", str(port), *flags) for port in ports]
    for hub in hubs:
        assert hub.stdout.readline().strip() == "ready"
    bases = ",".join(f"http://127.0.0.1:{port}" for port in ports)
    label = f"{media}, {len(hubs)} hub process{'es' if len(hubs) > 1 else ''}"
    try:
        joiner = spawn("--clients", bases, "join", ",".join(str(90000 + i) for i in range(5)), "0")
        joins = read_json(joiner)["join"]
        joiner.wait(30)
        for url in bases.split(","):
            post_sync(url, {"op": "end"})
        print(
            f"[{label}] join to first remote frame (both sides), 5 joins: "
            f"median {sorted(joins)[2]:.2f} s, max {max(joins):.2f} s, "
            f"all {' '.join(f'{j:.2f}' for j in joins)}",
            flush=True,
        )
        preencoded = args.participants == "preencoded"
        for mode in args.modes.split(","):
            for n in (int(c) for c in args.counts.split(",")):
                if n > args.max_consults:
                    break
                r = run_round(bases, hubs, mode, n, args.seconds, preencoded)
                print(
                    f"[{label}] {mode:6} {n:2} consults: min {r['min_fps']:.1f} fps, "
                    f"mean {r['mean_fps']:.1f}, hub CPU {r['hub_cpu']:.2f} cores "
                    f"({r['hub_cpu_per_consult']:.3f}/consult), participants CPU "
                    f"{r['clients_cpu']:.2f} cores, {r['recordings']} segments stored "
                    f"({r['recorded_seconds']:.0f} s)",
                    flush=True,
                )
                if r["min_fps"] < 14.5:  # 15 frames/s, within one frame over the window
                    break
    finally:
        for hub in hubs:
            hub.kill()
            hub.wait()


if __name__ == "__main__":
    main()
