"""structlog set-up: JSON lines, one file per node, nothing on the per-message hot path at INFO."""

from __future__ import annotations

import logging
import os

import msgspec
import structlog


def _encode(obj, **_ignored) -> bytes:
    return msgspec.json.encode(obj, enc_hook=str)


def configure(node: str, log_dir: str | None, level: int = logging.INFO) -> structlog.BoundLogger:
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        sink = open(os.path.join(log_dir, f"{node}.log"), "ab", buffering=0)  # noqa: SIM115
        factory = structlog.BytesLoggerFactory(sink)
    else:
        factory = structlog.BytesLoggerFactory()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_encode),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger().bind(node=node, pid=os.getpid())
