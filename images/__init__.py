"""The runtime images: their Dockerfiles and the one file their versions come from (beside this module), building
them (``build``), pinning an image through the container engine (``engine``: by registry digest, a local image
never pushed by its image ID), and the checks that keep the Dockerfiles and pins exact (``lint``)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["IMAGE_ENV", "image_from_env"]

#: set for the processes in a container that `ftc run --backend docker` (or a pod of `--emit k8s`) starts: the
#: image they run in, as JSON ({"ref", "requested", "pinned", ...}), for the lineage record
IMAGE_ENV = "FTC_CONTAINER_IMAGE"


def image_from_env() -> dict[str, Any] | None:
    """The image this process runs in, as whoever started its container said; None outside a container."""
    text = os.environ.get(IMAGE_ENV)
    return json.loads(text) if text else None
