"""Discovery benchmark: full ONVIF enumeration of 2,700 cameras at 50 ms answer latency, against a naive loop.

The simulated fleet (`cctv-camsim run --no-rtsp`, every camera latency_ms = 50) runs in a child process so
that this process's CPU and memory are the agent's alone.

(a) anchor: the naive sequential loop of onvif-zeep 0.2.12 (one `ONVIFCamera` per camera: WSDLs re-parsed,
    no timeouts) over a sample of well-behaved cameras, extrapolated to the fleet. onvif-zeep installs the
    same `onvif` module as onvif-zeep-async, so it runs from a throwaway venv as a subprocess; if that venv
    cannot be made, the loop is emulated with plain zeep clients built per camera (the report says which).
(b) ours: `agent.sweep` with the fast SOAP client over every camera (bar: <= 15 s).
(c) the same with 5% of the cameras hung (accept TCP, never answer) (bar: <= 20 s).
(d) this process's RSS after (b) and (c) (bar: < 300 MB).

    python -m bench.discovery [--quick] [--cameras 2700] [--concurrency 300] [--per-camera 1]

At 50 ms the agent is CPU-bound (one event loop on one core; ~2.5-3 ms of CPU per camera for 8 calls), so
one call in flight per camera (one connection each) and 300 cameras at a time beat 2 per camera: a second
connection per camera costs more CPU than the latency it hides. Other load on the machine shows directly
in the wall times, so the load average is reported.

Closing line: `discovery: X s for 2,700 cameras vs Y s naive loop (ratio R)`, R = naive / ours (bar >= 80).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import wsdiscovery
from bench.common import Report, cpu_seconds, current_rss_mib, parser, rss_mib

FLEET = 2700
LATENCY_MS = 50
BASE_IP = "127.91.0.1"  # tests use 127.90.0.0/16
ONVIF_PORT = 18080
WSD_PORT = 13791
ANCHOR_VENV = Path(os.environ.get("ONVIF_ZEEP_VENV", "/tmp/onvif-zeep-anchor-venv"))
ANCHOR_PACKAGE = "onvif-zeep==0.2.12"
STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


# --- the simulated fleet, in a child process ---


class FleetProcess:
    """`cctv-camsim run` as a child; `ledger` and `secrets` are written by it before it says ready."""

    def __init__(self, cameras: int, workdir: Path) -> None:
        self.ledger, self.secrets = workdir / "ledger.csv", workdir / "secrets.toml"
        scenario = workdir / "scenario.toml"
        scenario.write_text(f'seed = 7\n[[fault]]\ncameras = "*"\nlatency_ms = {LATENCY_MS}\n')
        command = [
            sys.executable, "-m", "camsim.cli", "run", "--district", "gangnam", "--cameras", str(cameras),
            "--base-ip", BASE_IP, "--onvif-port", str(ONVIF_PORT), "--wsd-port", str(WSD_PORT),
            "--control-port", "0", "--no-rtsp", "--no-multicast", "--scenario", str(scenario),
            "--write-ledger", str(self.ledger), "--secrets-out", str(self.secrets), "--log-level", "WARNING",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.control = self._wait_ready()

    def _wait_ready(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("event") == "ready":
                return str(event["control"])
            if event.get("event") == "error":
                raise SystemExit(f"camsim failed: {event['error']}")
        raise SystemExit(f"camsim exited with {self.proc.wait()} before it was ready")

    def post(self, path: str, body: dict[str, object]) -> Any:
        url = self.control + path  # http://127.0.0.1:port from the ready line
        request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - our own loopback URL
            return json.loads(answer.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- (a) the naive loop ---

_NAIVE_ONVIF_ZEEP = """
import json, sys, time
from onvif import ONVIFCamera
setup = {setup!r}
times, errors = [], []
for host, port, user, password in json.load(sys.stdin):
    started = time.perf_counter()
    try:
        cam = ONVIFCamera(host, port, user, password)  # GetCapabilities and an events attempt inside
        cam.devicemgmt.GetDeviceInformation()
        cam.devicemgmt.GetNetworkInterfaces()
        media = cam.create_media_service()
        for profile in media.GetProfiles():
            media.GetStreamUri({{"StreamSetup": setup, "ProfileToken": profile.token}})
    except Exception as exc:
        errors.append(type(exc).__name__)
    times.append(time.perf_counter() - started)
print(json.dumps({{"times": times, "errors": errors}}))
"""

_NAIVE_ZEEP = """
import json, os, sys, time
import onvif, requests, zeep
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken
wsdl = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
setup = {setup!r}
def service(name, binding, url, user, password):
    client = zeep.Client(os.path.join(wsdl, name), wsse=UsernameToken(user, password, use_digest=True),
                         transport=Transport(session=requests.Session()))  # no cache: parsed per camera
    return client.create_service(binding, url)
times, errors = [], []
for host, port, user, password in json.load(sys.stdin):
    started = time.perf_counter()
    try:
        url = f"http://{{host}}:{{port}}/onvif/device_service"
        dev = service("devicemgmt.wsdl", "{{http://www.onvif.org/ver10/device/wsdl}}DeviceBinding", url,
                      user, password)
        media_url = dev.GetCapabilities({{"Category": "All"}}).Media.XAddr
        dev.GetDeviceInformation()
        dev.GetNetworkInterfaces()
        media = service("media.wsdl", "{{http://www.onvif.org/ver10/media/wsdl}}MediaBinding", media_url,
                        user, password)
        for profile in media.GetProfiles():
            media.GetStreamUri({{"StreamSetup": setup, "ProfileToken": profile.token}})
    except Exception as exc:
        errors.append(type(exc).__name__)
    times.append(time.perf_counter() - started)
print(json.dumps({{"times": times, "errors": errors}}))
"""


def anchor_python() -> tuple[str, str]:
    """(python, method): the throwaway onvif-zeep venv, made on first use, else this venv's zeep."""
    python = ANCHOR_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(ANCHOR_VENV)], check=True, timeout=120)
            pip = [str(python), "-m", "pip", "install", "-q", ANCHOR_PACKAGE]
            subprocess.run(pip, check=True, timeout=300, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            print(
                f"  cannot install {ANCHOR_PACKAGE} ({exc}); emulating the naive loop with zeep", flush=True
            )
            return sys.executable, "zeep clients per camera (emulated)"
    return str(python), f"{ANCHOR_PACKAGE} in {ANCHOR_VENV}"


def naive_loop(sample: list[list[object]]) -> tuple[list[float], list[str], str]:
    python, method = anchor_python()
    script = _NAIVE_ZEEP if python == sys.executable else _NAIVE_ONVIF_ZEEP
    done = subprocess.run(
        [python, "-c", script.format(setup=STREAM_SETUP)],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"naive loop failed: {done.stderr[-500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["times"], result["errors"], method


def anchor_sample(fleet: FleetProcess, size: int) -> list[list[object]]:
    """Well-behaved cameras only (generic personality): the naive loop cannot read the quirky ones."""
    import csv
    import tomllib

    secrets = tomllib.loads(fleet.secrets.read_text())["credentials"]
    with fleet.ledger.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["vendor_hint"] == "CamSim"][:size]
    return [
        [r["host"], int(r["onvif_port"]), secrets[r["credentials_ref"]]["username"],
         secrets[r["credentials_ref"]]["password"]]
        for r in rows
    ]  # fmt: skip


# --- (b), (c) ours ---


def ours(fleet: FleetProcess, args: Any, label: str, report: Report) -> float:
    """One sweep over a fresh registry; returns its wall time."""

    from agent.credentials import CredentialStore
    from agent.ledger import load_ledger
    from agent.metrics import AgentMetrics
    from agent.registry import Registry
    from agent.sweep import sweep

    cameras, problems = load_ledger(fleet.ledger)
    assert not problems, problems
    registry = Registry("gangnam", "bench", cameras)
    credentials = CredentialStore.from_file(fleet.secrets)
    metrics = AgentMetrics()
    cpu0 = cpu_seconds()
    wall = asyncio.run(
        sweep(
            registry,
            credentials,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            metrics=metrics,
            per_camera=args.per_camera,
        )
    )
    cpu = cpu_seconds() - cpu0
    errors: dict[str, int] = {}
    for record in registry.records.values():
        if record.observation.error is not None:
            errors[record.observation.error.kind] = errors.get(record.observation.error.kind, 0) + 1
    enumerated = sum(1 for r in registry.records.values() if r.info is not None)
    report.add(f"{label}_wall_s", round(wall, 2))
    report.add(f"{label}_cpu_s", round(cpu, 2))
    report.add(f"{label}_enumerated", enumerated)
    report.add(f"{label}_errors", errors)
    calls = metrics.registry.get_sample_value(
        "cctv_agent_onvif_call_duration_seconds_count", {"call": "GetProfiles"}
    )
    report.add(f"{label}_get_profiles_calls", int(calls or 0))
    return wall


@dataclass
class WsdSweep:
    found_count: int
    elapsed_s: float


async def wsdiscovery_sweep(cameras: int) -> WsdSweep:
    """The agent's own WS-Discovery prober: unicast probes to every camera, replies collected for 3 s."""
    from camsim.fleet import host_addresses

    hosts = host_addresses(BASE_IP, cameras)
    result = await wsdiscovery.probe(hosts, port=WSD_PORT, window_s=3.0)
    return WsdSweep(len(result.found), result.elapsed_s)


def main() -> None:
    p = parser("discovery", __doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--cameras", type=int, default=FLEET)
    p.add_argument("--anchor-sample", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=300)
    p.add_argument("--per-camera", type=int, default=1)
    p.add_argument("--timeout", type=float, default=5.0, help="per-camera deadline, s (the agent's default)")
    args = p.parse_args()
    logging.getLogger("agent").setLevel(logging.WARNING)  # one line per failed camera is for the agent's log
    cameras, sample_size = (500, 5) if args.quick else (args.cameras, args.anchor_sample)
    report = Report("discovery")
    for key, value in (("cameras", cameras), ("latency_ms", LATENCY_MS), ("concurrency", args.concurrency),
                       ("per_camera", args.per_camera), ("timeout_s", args.timeout)):  # fmt: skip
        report.add(key, value)
    report.add("load_average_1m_at_start", round(os.getloadavg()[0], 2))
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        started = time.monotonic()
        fleet = FleetProcess(cameras, Path(tmp))
        try:
            report.add("fleet_start_s", round(time.monotonic() - started, 2))
            found = asyncio.run(wsdiscovery_sweep(cameras))
            report.add("wsdiscovery_found_in_3s_window", f"{found.found_count}/{cameras}")
            report.add("wsdiscovery_elapsed_s", round(found.elapsed_s, 2))
            times, errors, method = naive_loop(anchor_sample(fleet, sample_size))
            per_camera_s = sum(times) / len(times)
            naive_s = per_camera_s * FLEET
            report.add("naive_method", method)
            report.add("naive_sample", len(times))
            report.add("naive_errors", errors)
            report.add("naive_s_per_camera", round(per_camera_s, 3))
            report.add(f"naive_s_for_{FLEET}", round(naive_s, 1))
            ours_s = ours(fleet, args, "ours", report)
            report.add("rss_mib_after_ours", round(current_rss_mib()))
            hung = fleet.post("/faults", {"cameras": "5%", "seed": 7, "hang": True})["cameras"]
            report.add("hung_cameras", len(hung))
            hung_s = ours(fleet, args, "hung", report)
            report.add("rss_mib_after_hung", round(current_rss_mib()))
            report.add("rss_mib_peak", round(rss_mib()))
        finally:
            fleet.stop()
    scaled = ours_s * FLEET / cameras  # --quick runs fewer cameras: compare per fleet
    ratio = naive_s / scaled
    report.add(f"ours_s_scaled_to_{FLEET}", round(scaled, 2))
    if cameras == FLEET:
        report.add(
            "bars_met", {"ours<=15s": ours_s <= 15, "hung<=20s": hung_s <= 20, "ratio>=80": ratio >= 80}
        )
    report.finish(f"{scaled:.1f} s for {FLEET:,} cameras", f"{naive_s:.0f} s naive loop", ratio, args.json)


if __name__ == "__main__":
    main()
