"""A small agent for crash tests: the clip service with the real SessionPool, one camera, until killed.

    python tests/agent/clips/service_driver.py CONFIG_JSON [REQUEST_JSON]

CONFIG_JSON: {"spool_dir", "key_file", "mqtt_host", "mqtt_port", "s3": {ClipBucketSettings}, "camera_id",
"rtsp_url"}.
With REQUEST_JSON (a ClipRequest), the request is handed to the service as if it came from the broker; with
`-`, the request is read as one line from stdin after "ready" (a window of "now" is then not spent starting
Python). Prints "ready" once the service has started. With CLIP_DRIVER_KILL_AT in the environment the driver
SIGKILLs itself at that point of a delivery: `result` (the clip, thumbnail and manifest are in S3, the
`succeeded` result is about to be stored in the outbox) or `uploaded` (the result is stored, the job is about
to be marked `uploaded`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.clips.outbox import Outbox
from agent.clips.pipeline import CameraTarget
from agent.clips.service import ClipService
from agent.clips.session import SessionPool
from agent.clips.settings import ClipBucketSettings, ClipSettings
from agent.clips.spool import Job, Spool
from contract.messages import ClipRequest, ClipUpdate
from tests.agent.clips.clip_harness import DISTRICT, MqttPublisher
from tests.signed_commands import command_policy


def kill_at(point: str) -> None:
    """SIGKILL this process at `point` (see the module's docstring)."""
    put, save = Outbox.put, Spool.save

    def put_or_die(outbox: Outbox, update: ClipUpdate) -> None:
        if point == "result" and update.status == "succeeded":
            os.kill(os.getpid(), signal.SIGKILL)
        put(outbox, update)

    def save_or_die(spool: Spool, job: Job) -> None:
        if point == "uploaded" and job.state == "uploaded":
            os.kill(os.getpid(), signal.SIGKILL)
        save(spool, job)

    Outbox.put = put_or_die  # type: ignore[method-assign]
    Spool.save = save_or_die  # type: ignore[method-assign]


async def main(config: dict[str, object], request: ClipRequest | None) -> None:
    settings = ClipSettings(spool_dir=Path(str(config["spool_dir"])), key_file=Path(str(config["key_file"])),
                            retry_base_s=0.2, retry_max_s=1.0)  # fmt: skip
    target = CameraTarget(str(config["camera_id"]), str(config["rtsp_url"]), online=True)
    pool = SessionPool()
    publisher = MqttPublisher(str(config["mqtt_host"]), int(str(config["mqtt_port"])), "agent-driver")
    service = ClipService(
        settings, ClipBucketSettings.model_validate(config["s3"]), district=DISTRICT, agent_id="agent-driver",
        pool=pool, publish=publisher, policy=command_policy(Path(str(config["spool_dir"])).parent / "keys"),
        camera_lookup=lambda cid: target if cid == target.camera_id else None,
    )  # fmt: skip
    await service.start()
    if request is not None:
        service.handle(request)
    print("ready", flush=True)
    if sys.argv[2:] == ["-"]:
        line = await asyncio.to_thread(sys.stdin.readline)
        service.handle(ClipRequest.model_validate_json(line))
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    if "CLIP_DRIVER_KILL_AT" in os.environ:
        kill_at(os.environ["CLIP_DRIVER_KILL_AT"])
    loaded = json.loads(sys.argv[1])
    clip = ClipRequest.model_validate_json(sys.argv[2]) if sys.argv[2:] not in ([], ["-"]) else None
    asyncio.run(main(loaded, clip))
