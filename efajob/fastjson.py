"""json.dumps/json.loads through the C accelerator `_json`, without importing `json`.

Why: the hooks run once per job start and end, and `import json` costs ~10 ms of CPU there
(json.decoder and json.encoder import `re`, which imports `enum` and compiles patterns),
about a quarter of a bare interpreter start. The parsing and the encoding are done by
`_json`'s scanner and encoder in both cases; what `json` adds around them for the calls the
hook path makes (compact separators, sorted keys, ensure_ascii, no hooks but number parsers)
is a few lines, reproduced here. Output and results are the same as json's (tests check
both ways on the same inputs); any other use, or an interpreter whose `_json` lacks these
entry points, goes to `json` itself.

Standard library only: the hooks use it.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

try:
    import _json

    _c_scanner = _json.make_scanner
    _c_encoder = _json.make_encoder
    _c_ascii = _json.encode_basestring_ascii
except (ImportError, AttributeError):  # pragma: no cover - CPython always has them
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"  # json's whitespace


def _default(o: object) -> object:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _nan_constant(name: str) -> float:
    return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


class _Context:
    """What `_json.make_scanner` reads from a JSONDecoder: the same attributes."""

    strict = True  # json.loads' defaults
    object_hook = None
    object_pairs_hook = None

    def __init__(self, parse_float: Callable[[str], Any], parse_int: Callable[[str], Any],
                 parse_constant: Callable[[str], Any]):
        self.parse_float, self.parse_int, self.parse_constant = parse_float, parse_int, parse_constant


_scanners: dict = {}


def _scanner(parse_float: Optional[Callable[[str], Any]], parse_int: Optional[Callable[[str], Any]],
             parse_constant: Optional[Callable[[str], Any]]) -> Any:
    key = (parse_float, parse_int, parse_constant)
    s = _scanners.get(key)
    if s is None:
        ctx: Any = _Context(parse_float or float, parse_int or int, parse_constant or _nan_constant)
        s = _scanners[key] = _c_scanner(ctx)
    return s


def loads(data: object, *, parse_float: Optional[Callable[[str], Any]] = None,
          parse_int: Optional[Callable[[str], Any]] = None,
          parse_constant: Optional[Callable[[str], Any]] = None) -> Any:
    """json.loads(data, parse_float=..., parse_int=..., parse_constant=...). Raises ValueError
    (json.JSONDecodeError, which is one) for malformed JSON, as json does."""
    text = None
    if isinstance(data, str):
        text = data
    elif isinstance(data, (bytes, bytearray)) and not data.startswith((b"\xef\xbb\xbf", b"\xff", b"\xfe")) \
            and (len(data) < 2 or (data[0] and data[1])):  # UTF-8 (json detects UTF-16/32 by NULs)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if _json is None or text is None or text.startswith("\ufeff"):
        return _slow_loads(data, parse_float, parse_int, parse_constant)
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scanner(parse_float, parse_int, parse_constant)(text, start)
    except StopIteration:
        # what json says: "Expecting value" at that position
        return _slow_loads(data, parse_float, parse_int, parse_constant)
    if text[end:].strip(_WS):
        return _slow_loads(data, parse_float, parse_int, parse_constant)  # "Extra data"
    return obj


def _slow_loads(data: Any, parse_float: Optional[Callable[[str], Any]],
                parse_int: Optional[Callable[[str], Any]],
                parse_constant: Optional[Callable[[str], Any]]) -> Any:
    """json itself: for the error message, and for what the fast path does not take."""
    import json

    return json.loads(data, parse_float=parse_float, parse_int=parse_int,
                      parse_constant=parse_constant)


def dumps(obj: object, *, sort_keys: bool = False, compact: bool = True) -> str:
    """json.dumps(obj, sort_keys=sort_keys, separators=(",", ":") if compact else None)."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, sort_keys=sort_keys, separators=(",", ":") if compact else None)
    if isinstance(obj, str):
        return _c_ascii(obj)
    item, colon = (",", ":") if compact else (", ", ": ")
    # The arguments json.encoder.JSONEncoder.iterencode passes: markers for the circular
    # check (fresh per call, as json's), default, string encoder, indent, key and item
    # separators, sort_keys, skipkeys, allow_nan.
    enc = _c_encoder({}, _default, _c_ascii, None, colon, item, sort_keys, False, True)
    return "".join(enc(obj, 0))
