"""What a server may do: where it listens, who may call it, and how much one request may ask."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mtkit.errors import UsageError

API_KEY_ENV = "MTKIT_API_KEY"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # checked on every request but /health when set
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers at all
    max_batch: int = 64  # lines decoded together
    max_wait_ms: float = 5.0  # how long a decode waits for more requests to join it
    max_queue: int = 1024  # lines waiting; past it: 503 with Retry-After
    max_lines: int = 64  # per request
    max_chars: int = 1000  # per line
    max_beam: int = 16
    timeout: float = 30.0  # seconds from arrival to answer; past it: 504

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_lines", "max_chars", "max_beam"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_wait_ms < 0 or self.timeout <= 0:
            raise UsageError("--max-wait-ms must be >= 0 and --timeout > 0")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be 0..65535 (0: any free port), not {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError(f"the API key is empty (--api-key or {API_KEY_ENV})")
        if not self.loopback and not self.api_key:
            raise UsageError(
                f"--host {self.host} makes the server reachable from other machines: give --api-key KEY "
                f"(or set {API_KEY_ENV}), or bind to 127.0.0.1"
            )

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (127.0.0.0/8, ::1 or localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def max_body_bytes(self) -> int:
        """Room for the largest allowed request, every character JSON-escaped (\\uXXXX)."""
        return self.max_lines * (6 * self.max_chars + 16) + 4096
