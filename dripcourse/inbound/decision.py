"""What one inbound message was decided to be: the value every inbound path returns.

A module of its own so that the routing step, the effects of bounces and complaints and the
provider webhooks can all name it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass

from dripcourse.models import InboundKind


@dataclass(frozen=True)
class Decision:
    kind: InboundKind
    detail: str = ""  # for the log line: never a token, an address or the text
    enrollment_id: int | None = None
    day: int | None = None

    def describe(self) -> str:
        where = f" (enrollment {self.enrollment_id}, day {self.day})" if self.enrollment_id else ""
        return f"{self.kind}{where}" + (f": {self.detail}" if self.detail else "")
