"""Outside text echoed back in an error message (SPEC §10: a clear error, never the input whole).

A 5,000-character argument came back whole in the error that refused it. :func:`echo` is how every
error message quotes what it refuses: its repr (a NUL or an undecodable byte shows as an escape),
cut after ``limit`` characters with the length said. :func:`bounded` does the same to each long run
in a message someone else formatted (argparse's "invalid choice: ..."). :func:`storable` says whether
PostgreSQL can store or compare the text at all (no NUL, no lone surrogate from undecodable argv bytes).
"""

import re

ECHO_LIMIT = 60


def echo(value, limit: int = ECHO_LIMIT) -> str:
    """``value`` quoted for an error message, at most about ``limit`` characters of it."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


_LONG_QUOTED = re.compile(rf"'([^']{{{ECHO_LIMIT + 20},}})'")
_LONG_RUN = re.compile(rf"\S{{{ECHO_LIMIT + 20},}}")


def bounded(message: str) -> str:
    """``message`` with every quoted value, or run of non-blank characters, longer than ECHO_LIMIT + 20
    characters cut as echo() cuts it."""
    message = _LONG_QUOTED.sub(lambda m: echo(m[1]), message)
    message = _LONG_RUN.sub(lambda m: f"{m[0][:ECHO_LIMIT]}… ({len(m[0]):,} characters)", message)
    if len(message) > 20 * ECHO_LIMIT:  # long only by its spaces: a sentence of many short words
        message = f"{message[: 20 * ECHO_LIMIT]}… ({len(message):,} characters)"
    return message


def storable(text: str) -> bool:
    """PostgreSQL can store (and compare against) ``text``: no NUL, valid UTF-8 once encoded."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
