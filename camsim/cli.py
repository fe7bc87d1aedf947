"""`cctv-camsim`: run a district's simulated camera fleet, write its ledger, list districts.

    cctv-camsim run --district gangnam --cameras 2700 --write-ledger ledger.csv --secrets-out secrets.toml
    cctv-camsim write-ledger --district jongno --cameras 300 --out ledger.csv --secrets-out secrets.toml
    cctv-camsim districts

`run` prints progress while starting (a bar on a terminal, JSON lines otherwise), then one JSON line
`{"event": "ready", ...}` on stdout, and serves until SIGTERM or SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from camsim.fleet import Fleet, FleetOptions, build_specs, personality_mix
from camsim.ledger import cameras_per_district, write_ledger, write_secrets
from camsim.model import CameraSpec
from camsim.scenario import FaultError, apply_scenario, load_scenario
from common import jsonlog
from common.progress import ProgressReporter
from contract.districts import DISTRICTS

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event, ensure_ascii=False), flush=True)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camsim"


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--district",
        required=True,
        choices=sorted(DISTRICTS),
        metavar="SLUG",
        help="district slug (see `cctv-camsim districts`)",
    )
    p.add_argument("--cameras", type=int, required=True, help="number of cameras")
    p.add_argument(
        "--ledger",
        type=Path,
        default=None,
        metavar="FILE",
        help="camera positions CSV (district,lat,lon,count,address); default: bundled Seoul data",
    )
    p.add_argument(
        "--near",
        type=_place,
        default=None,
        metavar="LAT,LON",
        help="place the cameras on the district's positions nearest this place, nearest first",
    )
    p.add_argument(
        "--codec",
        choices=["h264", "h265"],
        default=None,
        help="every camera's codec (H.265-only models stay H.265); default: about 10%% H.265",
    )
    p.add_argument("--base-ip", default="127.20.0.1", help="first camera address; one address per camera")
    p.add_argument("--onvif-port", type=int, default=80)
    p.add_argument("--rtsp-port", type=int, default=554)
    p.add_argument("--seed", type=int, default=1, help="seed for passwords, vendors and codecs")
    p.add_argument("--secrets-out", type=Path, metavar="FILE", help="write credentials TOML (mode 0600)")


def _place(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON (e.g. 37.5595,126.9615)") from None
    return lat, lon


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cctv-camsim", description="Simulated ONVIF/RTSP camera fleets.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve a district's cameras until SIGTERM/SIGINT")
    _fleet_args(run)
    run.add_argument("--scenario", type=Path, metavar="FILE", help="faults to apply at start (TOML)")
    run.add_argument("--wsd-port", type=int, default=3702, help="WS-Discovery UDP port")
    run.add_argument("--no-multicast", action="store_true", help="do not join 239.255.255.250")
    run.add_argument("--control-port", type=int, default=8554, help="control API port on 127.0.0.1")
    run.add_argument("--write-ledger", type=Path, metavar="FILE", help="write the agent's ledger CSV")
    run.add_argument("--cache-dir", type=Path, default=_default_cache_dir(), help="encoded clip cache")
    run.add_argument("--no-rtsp", action="store_true", help="ONVIF and WS-Discovery only")
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    run.add_argument("--log-level", default="INFO", choices=levels, type=str.upper)
    ledger = sub.add_parser("write-ledger", help="write the ledger (and secrets) without serving")
    _fleet_args(ledger)
    ledger.add_argument("--out", type=Path, required=True, metavar="FILE", help="ledger CSV to write")
    sub.add_parser("districts", help="list district slugs, Korean names and cameras in the data")
    return parser


def _specs(args: argparse.Namespace) -> list[CameraSpec]:
    from camsim.personalities import load_personalities

    if args.cameras < 1:
        raise FaultError("--cameras must be at least 1")
    opts = FleetOptions(
        args.district, args.cameras, args.base_ip, args.onvif_port, args.rtsp_port, args.seed, args.ledger,
        args.near, args.codec,
    )  # fmt: skip
    return build_specs(opts, personality_mix(load_personalities()))


def _write_outputs(specs: list[CameraSpec], ledger: Path | None, secrets: Path | None) -> None:
    if ledger is not None:
        write_ledger(specs, ledger)
    if secrets is not None:
        write_secrets(specs, secrets)


def _progress() -> ProgressReporter:
    """A bar on a terminal; elsewhere a JSON `progress` event on stdout every 10% of the start."""
    return ProgressReporter(
        "starting", emit=lambda done, total: _emit({"event": "progress", "started": done, "total": total})
    )


async def _serve(args: argparse.Namespace, specs: list[CameraSpec]) -> int:
    from camsim.control_api import ControlApi
    from camsim.media import MediaLibrary

    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    media = MediaLibrary(args.cache_dir)
    fleet = Fleet(
        specs, media=media, rtsp=not args.no_rtsp, wsd_port=args.wsd_port, multicast=not args.no_multicast
    )
    try:
        await fleet.start(_progress())
    except OSError as exc:
        _emit({"event": "error", "error": f"cannot start the fleet: {exc}"})
        return 1
    control = ControlApi(fleet, args.control_port)
    try:
        await control.start()
        _emit(
            {
                "event": "ready",
                "cameras": len(specs),
                "control": control.url,
                "ledger": str(args.write_ledger) if args.write_ledger else None,
                "startup_s": round(time.monotonic() - t0, 3),
            }
        )
        await stop.wait()
        log.info("stopping")
    except OSError as exc:
        _emit({"event": "error", "error": f"cannot start the control API: {exc}"})
        return 1
    finally:
        await control.stop()
        await fleet.stop()
    return 0


def _districts() -> int:
    counts = cameras_per_district()
    for slug, korean in sorted(DISTRICTS.items()):
        print(f"{slug}\t{korean}\t{counts.get(korean, 0)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "districts":
        return _districts()
    jsonlog.setup(getattr(args, "log_level", "INFO"))
    try:
        specs = _specs(args)
        if args.command == "run" and args.scenario is not None:
            hits = apply_scenario(load_scenario(args.scenario), specs)
            log.info("scenario %s applied: %s", args.scenario, hits)
        ledger = args.out if args.command == "write-ledger" else args.write_ledger
        _write_outputs(specs, ledger, args.secrets_out)
    except (FaultError, ValueError, OSError) as exc:
        print(f"cctv-camsim: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "write-ledger":
        return 0
    return asyncio.run(_serve(args, specs))


if __name__ == "__main__":
    sys.exit(main())
