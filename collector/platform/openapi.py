"""Print the API's OpenAPI document: `python -m collector.platform.openapi > docs/api/openapi.json`.

The checked-in copy is compared with this output by tests/collector/test_platform_openapi.py.
"""

from __future__ import annotations

import json
from typing import Any

from collector.platform.api import create_app
from collector.platform.context import Platform
from collector.platform.stores import ThreadStores


def document() -> dict[str, Any]:
    def no_store() -> Any:
        raise RuntimeError("the OpenAPI document needs no store")

    return create_app(Platform(stores=ThreadStores(no_store), health=dict)).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
