"""gitignore-style patterns (``.dockerignore``, ``.gitignore``) as regular expressions.

fal turns ``.dockerignore`` patterns into regexes with ``pathspec`` and skips ``.gitignore``d files
in ``sync_dir``; minifal does both with this module so it needs no extra dependency. The regexes
match paths relative to the context directory, with ``/`` separators, as ``pathspec``'s do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _segment_to_regex(segment: str) -> str:
    """One path segment: ``*`` and ``?`` never cross a ``/``; ``[...]`` is a character class."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "\\" and i + 1 < len(segment):
            out.append(re.escape(segment[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end]
            if body[0] in "!^":
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def pattern_to_regex(pattern: str) -> tuple[str | None, bool | None]:
    """``(regex, include)`` of one pattern; ``(None, None)`` for a blank line or a comment.

    ``include`` is False for a ``!negated`` pattern. As in git: a pattern with a ``/`` before its
    end is anchored at the root, else it matches at any depth; a trailing ``/`` matches only
    directories (their contents); ``**`` spans any number of directories.
    """
    text = pattern.rstrip()
    if not text or text.startswith("#"):
        return None, None
    include = True
    if text.startswith("!"):
        include = False
        text = text[1:]
    directory_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None, None
    anchored = "/" in text
    parts = [part for part in text.lstrip("/").split("/") if part]
    head = "^" if anchored else "^(?:.+/)?"
    while parts and parts[0] == "**":
        head = "^(?:.+/)?"
        parts = parts[1:]
    if not parts:
        return "^.*$", include
    everything_inside = parts[-1] == "**"
    if everything_inside:
        parts = parts[:-1]
    body = ""
    for index, part in enumerate(parts):
        if part == "**":
            body += "(?:/.+)?"
            continue
        if index > 0:
            body += "/"
        body += _segment_to_regex(part)
    if everything_inside or directory_only:
        body += "/.*"
    else:
        body += "(?:/.*)?"
    return head + body + "$", include


class IgnoreRules:
    """A list of patterns where, as in git, the last pattern that matches a path decides."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for pattern in patterns:
            regex, include = pattern_to_regex(pattern)
            if regex is not None:
                self.rules.append((re.compile(regex), bool(include)))

    def ignores(self, relative_path: str) -> bool:
        ignored = False
        for regex, include in self.rules:
            if regex.match(relative_path):
                ignored = include
        return ignored
