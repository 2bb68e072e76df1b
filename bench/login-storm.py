#!/usr/bin/env python3
"""A log-in storm against a running users-api: how much memory it takes, and what the crowd hears.

    deploy/local/stack.sh up
    python3 bench/login-storm.py                     # 500 concurrent log-ins
    python3 bench/login-storm.py --fans 1000 --json .bench/login-storm.json

Every log-in hashes a password with argon2id (~19 MiB each). users-api runs at most
LOGIN_MAX_CONCURRENT_HASHES of them at once and answers the rest 503 LOGIN_BUSY with
Retry-After, so its memory is bounded by that setting, not by the size of the crowd. This
script signs one fan up, resets users-api's peak-RSS counter (/proc/PID/clear_refs), opens
--fans connections straight to users-api (the gateway's per-address limit would turn one load
generator away) and sends one log-in on each at the same moment, then reports the answers
(status and whether Retry-After came with each 503) and the peak RSS (VmHWM) the storm caused.
Exit status 1 when any answer is neither 201 nor 503 with Retry-After. Standard library only.
"""

import argparse
import asyncio
import collections
import json
import pathlib
import secrets
import sys
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent


def rss_kib(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def users_api_pid(state: pathlib.Path) -> int:
    pid = int((state / "pids" / "users-api.pid").read_text().strip())
    pathlib.Path(f"/proc/{pid}/status").stat()  # running?
    return pid


def sign_up(base: str, username: str, password: str) -> None:
    body = json.dumps({"username": username, "password": password}).encode()
    req = urllib.request.Request(
        base + "/api/users", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"login-storm: sign-up answered {e.code}: {e.read().decode(errors='replace')}")


async def log_in(host: str, port: int, body: bytes, start: asyncio.Event, answers: collections.Counter):
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        b"POST /api/sessions HTTP/1.1\r\nHost: users-api\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    await start.wait()
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower().split("\r\n")
    status = head[0].split()[1] if head and len(head[0].split()) > 1 else "no answer"
    retry_after = any(h.startswith("retry-after:") for h in head[1:])
    answers[f"{status}{' + Retry-After' if status == '503' and retry_after else ''}"] += 1


async def storm(host: str, port: int, fans: int, body: bytes, pid: int) -> dict:
    answers: collections.Counter = collections.Counter()
    start = asyncio.Event()
    tasks = [asyncio.create_task(log_in(host, port, body, start, answers)) for _ in range(fans)]
    await asyncio.sleep(0.5)  # let every connection open first
    samples = []

    async def sample():
        while True:
            samples.append(rss_kib(pid, "VmRSS"))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    began = time.monotonic()
    start.set()
    await asyncio.gather(*tasks)
    took = time.monotonic() - began
    sampler.cancel()
    return {"answers": dict(answers), "seconds": round(took, 2), "users_api_sampled_peak_mib": round(max(samples) / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fans", type=int, default=500)
    p.add_argument("--url", default="http://127.0.0.1:8081", help="users-api, not the gateway")
    p.add_argument("--state", default=str(REPO / ".stack"), help="the local stack's state dir")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args()

    pid = users_api_pid(pathlib.Path(args.state))
    host, port = args.url.split("://", 1)[1].rsplit(":", 1)
    # A fresh fan each run: the stack's database keeps the fans of earlier runs.
    username, password = f"storm_{secrets.token_hex(4)}", "storm-fan-passphrase"
    sign_up(args.url, username, password)
    body = json.dumps({"username": username, "password": password}).encode()

    before = rss_kib(pid, "VmRSS")
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    result = asyncio.run(storm(host, int(port), args.fans, body, pid))
    report = {
        "fans": args.fans,
        "users_api_rss_before_mib": round(before / 1024, 1),
        "users_api_peak_rss_mib": round(rss_kib(pid, "VmHWM") / 1024, 1),
        **result,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    unexpected = {k: v for k, v in result["answers"].items() if k not in ("201", "503 + Retry-After")}
    if unexpected:
        print(f"login-storm: unexpected answers {unexpected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
