"""The one reader of the project's text documents: YAML (sweep files, trial configs, base files) and JSON
(trial configs, Style-Bert-VITS2 ``config.json``).

``read_yaml(path)`` / ``read_json(path)`` return the parsed document or raise ``TextFileError`` whose message
starts with the path (and the line where it applies), for every way a file can be wrong:

- not there, a directory, unreadable;
- not UTF-8 text (the message names the line and column of the first bad byte, never the bytes' content);
- not YAML (the line and column of the parser's complaint);
- a mapping with the same key twice. PyYAML and ``json`` keep the last value silently, so a whole sweep axis
  could vanish; here the file is refused with the key and both line numbers (YAML) or the key (JSON).

Only plain YAML types are built (``yaml.SafeLoader``): no tags that construct objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


class TextFileError(ValueError):
    """A YAML or JSON file cannot be read; the message names the file (and the line)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # the node's own keys only: a key merged in with `<<` may be overridden, as YAML intends
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let SafeLoader give its own error
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise _DuplicateKey(
                f"line {line}: key {key!r} is given twice (lines {first} and {line}); "
                "the second would silently win - remove one"
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as text, or a ``TextFileError`` naming the line and column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextFileError(
            f"{where}: line {line}, column {col}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text (``where`` names it in errors); duplicate keys are refused."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except _DuplicateKey as e:
        raise TextFileError(f"{where}: {e.message}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise TextFileError(f"{where}:{at} invalid YAML: {getattr(e, 'problem', None) or e}") from None


def read_text(path: str | Path, kind: str = "text") -> str:
    """The UTF-8 text of a file; a missing file, a directory, an unreadable or non-UTF-8 file is named."""
    path = Path(path)
    if not path.exists():
        raise TextFileError(f"{path}: file not found")
    if path.is_dir():
        raise TextFileError(f"{path}: is a directory, not a {kind} file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(f"{path}: cannot be read: {e.strerror or e}") from None
    return decode_utf8(data, str(path))


def read_lines(path: str | Path, *, bom: bool = False) -> list[tuple[int, str | None, str | None]]:
    """Every line of a line-oriented UTF-8 file (a corpus list, a transcript) as ``(line number, text, error)``.

    Each line is decoded on its own, so one line that is not UTF-8 costs only that line: it comes back as
    ``(n, None, "not UTF-8 (byte 0xff at column 7)")`` and the caller drops it (lenient) or refuses the file
    (strict) with its line number. ``bom``: strip a UTF-8 byte-order mark at the start (``utf-8-sig`` files).
    """
    data = Path(path).read_bytes()
    if bom and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: list[tuple[int, str | None, str | None]] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        try:
            out.append((n, raw.decode("utf-8"), None))
        except UnicodeDecodeError as e:
            out.append((n, None, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"))
    if out and out[-1][1] == "":  # the newline that ends the last line does not start another
        out.pop()
    return out


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document at ``path`` (None for an empty file); see the module docstring."""
    return parse_yaml(read_text(path, "YAML"), str(path))


def _no_duplicate_pairs(where: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise TextFileError(
                    f"{where}: key {k!r} is given twice in one object; the second would silently win"
                )
            out[k] = v
        return out

    return hook


def parse_json(text: str, where: str) -> Any:
    """Parse JSON text (``where`` names it in errors); duplicate keys are refused."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_pairs(where))
    except json.JSONDecodeError as e:
        raise TextFileError(f"{where}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None


def read_json(path: str | Path) -> Any:
    """The parsed JSON document at ``path``; see the module docstring."""
    return parse_json(read_text(path, "JSON"), str(path))
