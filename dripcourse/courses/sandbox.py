"""The Jinja2 sandbox every course template runs in: only the variables we pass, no globals,
and no expression that makes a value of any size.
"""

from __future__ import annotations

import jinja2
import jinja2.sandbox

# The most a single expression may make: a whole lesson is far smaller than this.
MAX_TEMPLATE_VALUE = 200_000


class Sandbox(jinja2.sandbox.SandboxedEnvironment):
    """Jinja's sandbox, with ``*`` and ``**`` bounded: ``{{ "a" * 100000000 }}`` would make a
    value of any size (and take the machine's memory) in check, preview, workers and pages."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):  # type: ignore[no-untyped-def]
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise jinja2.sandbox.SecurityError("an exponent over 100 is not allowed")
            return left**right
        size = _repeat_size(left, right)
        if size is not None and size > MAX_TEMPLATE_VALUE:
            raise jinja2.sandbox.SecurityError(
                f"a value of {size} characters or items is not allowed "
                f"(at most {MAX_TEMPLATE_VALUE})"
            )
        return left * right


def _repeat_size(left: object, right: object) -> int | None:
    """The length ``left * right`` would have, when it repeats a text or a list."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * max(times, 0)
    return None


def sandbox(**options: object) -> jinja2.sandbox.SandboxedEnvironment:
    """A sandboxed environment holding nothing but what we pass each render.

    Jinja's own globals (``range``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``, ``dict``)
    are removed too: a template sees only the documented variables.
    """
    env = Sandbox(undefined=jinja2.StrictUndefined, **options)  # type: ignore[arg-type]
    env.globals.clear()
    return env
