"""The camera simulator at district scale: start time and memory of 2,700 cameras in one process, SOAP
requests per second, WS-Discovery answers, and how many 1080p RTSP streams it serves in real time.

    python -m bench.camsim [--quick] [--json]

The simulator runs as `cctv-camsim run` in its own process; this process is the client. The ratio is the
number of 1080p streams served in real time divided by 64 (the issue's bar).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Report, current_rss_mib, parser
from camsim.personalities import load_personalities
from camsim.probe import probe_unicast
from camsim.rtsp_load import measure_streams

BASE_IP, ONVIF_PORT, RTSP_PORT, WSD_PORT = "127.100.0.1", 18080, 18554, 13702
STREAM_BAR = 64
GET_TIME = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
    b'<s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)
CACHE = Path(os.environ.get("CAMSIM_CACHE", tempfile.gettempdir() + "/camsim-bench-clips"))


def start_simulator(cameras: int, work: Path) -> tuple[subprocess.Popen[str], dict[str, Any], float]:
    """Launch `cctv-camsim run`; (process, ready event, seconds from launch to ready)."""
    command = [
        sys.executable, "-m", "camsim.cli", "run", "--district", "gangnam", "--cameras", str(cameras),
        "--base-ip", BASE_IP, "--onvif-port", str(ONVIF_PORT), "--rtsp-port", str(RTSP_PORT),
        "--wsd-port", str(WSD_PORT), "--no-multicast", "--control-port", "0", "--cache-dir", str(CACHE),
        "--write-ledger", str(work / "ledger.csv"), "--secrets-out", str(work / "secrets.toml"),
        "--log-level", "WARNING",
    ]  # fmt: skip
    launched = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event.get("event") == "ready":
            return process, event, time.monotonic() - launched
        if event.get("event") == "error":
            raise RuntimeError(event["error"])
    raise RuntimeError(f"camsim exited with {process.wait()} before it was ready")


def cameras(control: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{control}/cameras", timeout=30) as response:  # noqa: S310 - our own loopback API
        data: list[dict[str, Any]] = json.load(response)
        return data


async def soap_rate(hosts: list[str], seconds: float, concurrency: int = 64) -> float:
    """Unauthenticated GetSystemDateAndTime requests per second, spread over the cameras."""
    done = 0
    deadline = time.monotonic() + seconds
    headers = {"Content-Type": "application/soap+xml"}

    async def worker(n: int, http: aiohttp.ClientSession) -> None:
        nonlocal done
        i = n
        while time.monotonic() < deadline:
            url = f"http://{hosts[i % len(hosts)]}:{ONVIF_PORT}/onvif/device_service"
            async with http.post(url, data=GET_TIME, headers=headers) as response:
                await response.read()
                done += response.status == 200
            i += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.monotonic()
        await asyncio.gather(*(worker(n, http) for n in range(concurrency)))
        return done / (time.monotonic() - started)


def h264_main_urls(listing: list[dict[str, Any]], secrets: dict[str, Any], count: int) -> list[str]:
    """RTSP URLs of the main (1080p) stream of `count` H.264 cameras."""
    h265_only = {name for name, p in load_personalities().items() if p.h265_only}
    urls = []
    for camera in listing:
        if camera["codec"] != "h264" or camera["vendor"] in h265_only:
            continue
        creds = secrets["credentials"][f"cam/{camera['id']}"]
        urls.append(f"rtsp://{creds['username']}:{creds['password']}@{camera['host']}:{RTSP_PORT}/stream1")
        if len(urls) == count:
            break
    return urls


def main(argv: list[str] | None = None) -> int:
    args = parser("camsim", __doc__ or "").parse_args(argv)
    fleet_size = 2700
    seconds = 10.0 if args.quick else 30.0
    report = Report("camsim")
    with tempfile.TemporaryDirectory(prefix="bench-camsim-") as tmp:
        work = Path(tmp)
        process, ready, startup = start_simulator(fleet_size, work)
        try:
            report.add("cameras", ready["cameras"])
            report.add("startup_s", round(startup, 2))
            report.add("rss_mib_after_start", round(current_rss_mib(process.pid)))
            listing = cameras(ready["control"])
            hosts = [c["host"] for c in listing]
            found = asyncio.run(probe_unicast(hosts, WSD_PORT, timeout_s=3.0))
            report.add("wsdiscovery_found_in_3s", f"{len(found)}/{len(hosts)}")
            rate = asyncio.run(soap_rate(hosts, 3.0 if args.quick else 10.0))
            report.add("soap_requests_per_s", round(rate))
            report.add("rss_mib_after_soap", round(current_rss_mib(process.pid)))
            secrets = tomllib.loads((work / "secrets.toml").read_text())
            pid = process.pid
            served = serve_streams(report, listing, secrets, pid=pid, seconds=seconds, quick=args.quick)
        finally:
            process.terminate()
            process.wait(30)
    ours, anchor = f"{served} 1080p streams in real time", f"{STREAM_BAR} streams (the bar)"
    report.finish(ours, anchor, served / STREAM_BAR, args.json)
    return 0


def serve_streams(
    report: Report,
    listing: list[dict[str, Any]],
    secrets: dict[str, Any],
    *,
    pid: int,
    seconds: float,
    quick: bool,
) -> int:
    """The largest tried number of concurrent 1080p streams that all kept real time (64, then 128)."""
    warm = h264_main_urls(listing, secrets, 1)
    asyncio.run(measure_streams(warm, 2.0, open_timeout=120))  # the clip is encoded once, on first PLAY
    served = 0
    for count in (STREAM_BAR,) if quick else (STREAM_BAR, 2 * STREAM_BAR):
        urls = h264_main_urls(listing, secrets, count)
        result = asyncio.run(measure_streams(urls, seconds, server_pid=pid))
        report.add(f"streams_{count}_realtime", result["realtime"])
        report.add(f"streams_{count}_max_lag_s", result["max_lag_s"])
        report.add(f"streams_{count}_server_cpu_pct_per_stream", result.get("server_cpu_pct_per_stream"))
        report.add(f"streams_{count}_errors", result["errors"])
        if not result["realtime"]:
            break
        served = count
    return served


if __name__ == "__main__":
    raise SystemExit(main())
