"""A small agent for crash tests: the clip service with the real SessionPool, one camera, until killed.

    python tests/agent/clips/service_driver.py CONFIG_JSON [REQUEST_JSON]

CONFIG_JSON: {"spool_dir", "key_file", "mqtt_host", "mqtt_port", "s3": {S3Settings}, "camera_id", "rtsp_url"}.
With REQUEST_JSON (a ClipRequest), the request is handed to the service as if it came from the broker.
Prints "ready" once the service has started.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.clips.pipeline import CameraTarget
from agent.clips.service import ClipService
from agent.clips.session import SessionPool
from agent.clips.settings import ClipSettings, S3Settings
from contract.messages import ClipRequest
from tests.agent.clips.clip_harness import DISTRICT, MqttPublisher


async def main(config: dict[str, object], request: ClipRequest | None) -> None:
    settings = ClipSettings(spool_dir=Path(str(config["spool_dir"])), key_file=Path(str(config["key_file"])),
                            retry_base_s=0.2, retry_max_s=1.0)  # fmt: skip
    target = CameraTarget(str(config["camera_id"]), str(config["rtsp_url"]), online=True)
    pool = SessionPool()
    publisher = MqttPublisher(str(config["mqtt_host"]), int(str(config["mqtt_port"])), "agent-driver")
    service = ClipService(
        settings, S3Settings.model_validate(config["s3"]), district=DISTRICT, agent_id="agent-driver",
        pool=pool, publish=publisher, camera_lookup=lambda cid: target if cid == target.camera_id else None,
    )  # fmt: skip
    await service.start()
    if request is not None:
        service.handle(request)
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    loaded = json.loads(sys.argv[1])
    clip = ClipRequest.model_validate_json(sys.argv[2]) if len(sys.argv) > 2 else None
    asyncio.run(main(loaded, clip))
