"""Reading and rewriting a Dockerfile's text: its build arguments and its final base image."""

from __future__ import annotations

import json
import re

_PARSER_DIRECTIVE = re.compile(r"^#\s*(syntax|escape|check)\s*=", re.IGNORECASE)
_ARG = re.compile(r"^(?P<indent>\s*)ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<default>.*))?$")
_FROM = re.compile(r"^\s*FROM\s+(?P<rest>.+)$", re.IGNORECASE)
_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._/:@+,=-]*$")


def split_parser_directives(text: str) -> tuple[list[str], list[str]]:
    """Docker reads parser directives (``# syntax=...``) only before anything else: keep them
    first when text is put above a Dockerfile."""
    lines = text.splitlines()
    index = 0
    while index < len(lines) and _PARSER_DIRECTIVE.match(lines[index]):
        index += 1
    return lines[:index], lines[index:]


def _quoted(value: str) -> str:
    if _PLAIN_VALUE.match(value):
        return value
    return json.dumps(value).replace("$", "\\$")


def _unquoted(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def declared_args(text: str) -> list[str]:
    """Names of the build arguments the Dockerfile declares (``ARG NAME[=default]``)."""
    names = []
    for line in text.splitlines():
        match = _ARG.match(line)
        if match and match.group("name") not in names:
            names.append(match.group("name"))
    return names


def with_build_args(text: str, build_args: dict[str, str]) -> str:
    """The Dockerfile with each ``ARG NAME`` given in ``build_args`` defaulting to its value, so
    that a plain ``docker build`` builds what ``--build-arg NAME=value`` would."""

    def rewrite(line: str) -> str:
        match = _ARG.match(line)
        if match is None or match.group("name") not in build_args:
            return line
        name = match.group("name")
        return f"{match.group('indent')}ARG {name}={_quoted(str(build_args[name]))}"

    return "\n".join(rewrite(line) for line in text.splitlines())


def final_base_image(text: str, build_args: dict[str, str] | None = None) -> str | None:
    """The image the last stage starts ``FROM`` (through earlier stages' ``AS`` names), with the
    build arguments (and the global ARG defaults) substituted; None without a ``FROM``."""
    values: dict[str, str] = {}
    stages: dict[str, str] = {}
    image = None
    for line in text.replace("\\\n", " ").splitlines():
        arg = _ARG.match(line)
        if arg and image is None and arg.group("default") is not None:
            values[arg.group("name")] = _unquoted(arg.group("default"))
        start = _FROM.match(line)
        if start:
            words = [word for word in start.group("rest").split() if not word.startswith("--")]
            if not words:
                continue
            image = stages.get(words[0].lower(), words[0])
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2].lower()] = image
    if image is None:
        return None
    values.update(build_args or {})

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        return values.get(name, match.group(0))

    return _VARIABLE.sub(substitute, image)
