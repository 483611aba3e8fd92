"""The TOML that efajob's config files hold, parsed without importing `tomllib`.

Why: the hooks read the config at every job start and end, and `import tomllib` costs
~15-20 ms of CPU there (it imports `re`, `datetime`, `string` and compiles its patterns): as
much as the whole interpreter start. efajob's config is flat: `[section]` headers and
`key = value` lines with bare keys and plain strings, integers, decimals or booleans.
`parse` reads exactly that subset and returns None for anything else (an escape, a quoted or
dotted key, an array, a date, a duplicate key, a syntax error): the caller then hands the
file to tomllib, which parses the rest of TOML and words the errors. So a file parses to
what tomllib makes of it, or goes to tomllib (tests compare the two on the same inputs).

Standard library only: the hooks use it.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_CONTROL = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}  # tab is allowed


def _bare_key(s: str) -> bool:
    return bool(s) and not (set(s) - _BARE)


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _after(rest: str) -> bool:
    """Only blanks, then nothing or a comment, may follow a value."""
    rest = rest.lstrip(" \t")
    return not rest or rest[0] == "#"


def _value(text: str) -> Any:
    """One value of the subset, or raise ValueError (not in the subset)."""
    if text[:1] in ('"', "'"):
        q = text[0]
        end = text.find(q, 1)
        if end < 0 or text.startswith(q * 3) or not _after(text[end + 1:]):
            raise ValueError
        body = text[1:end]
        if q == '"' and "\\" in body:
            raise ValueError  # escapes: tomllib's job
        return body
    value, _, comment = text.partition("#")
    value = value.rstrip(" \t")
    if value == "true":
        return True
    if value == "false":
        return False
    sign, num = (value[0], value[1:]) if value[:1] in ("+", "-") else ("", value)
    whole, dot, frac = num.partition(".")
    # TOML: no leading zeros, digits on both sides of the point; underscores, exponents,
    # hex/octal/binary, inf and nan are left to tomllib.
    if not _digits(whole) or (len(whole) > 1 and whole[0] == "0"):
        raise ValueError
    if dot:
        if not _digits(frac):
            raise ValueError
        return float(sign + whole + "." + frac)
    return int(sign + whole)


def parse(data: bytes) -> Optional[Dict[str, Any]]:
    """The document, or None when it is not in the subset (or not TOML at all)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\r" in text or "\ufeff" in text:
        return None  # CRLF and BOMs: let tomllib decide
    doc: Dict[str, Any] = {}
    table = doc
    for line in text.split("\n"):
        if _CONTROL.intersection(line):
            return None
        s = line.strip(" \t")
        if not s or s[0] == "#":
            continue
        if s[0] == "[":
            name, close, rest = s[1:].partition("]")
            if not close or not _bare_key(name) or name in doc or not _after(rest):
                return None
            table = doc[name] = {}
            continue
        key, eq, rest = s.partition("=")
        key = key.rstrip(" \t")
        if not eq or not _bare_key(key) or key in table:
            return None
        try:
            table[key] = _value(rest.lstrip(" \t"))
        except ValueError:
            return None
    return doc
