"""Structured logging shared by the services.

structlog renders both our records and those of libraries (grpc, faster_whisper) through the
standard ``logging`` module, so one format and level apply everywhere. Per-call context
(session id, turn id) is bound with ``structlog.contextvars`` and shows on every line.
"""

from __future__ import annotations

import logging
import sys

import structlog

from services.runtime.config import LogSettings


def configure_logging(settings: LogSettings, service: str) -> None:
    """Sets up structlog and stdlib logging for a service process."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.json_format else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for a module."""
    return structlog.stdlib.get_logger(name)  # type: ignore[no-any-return]
