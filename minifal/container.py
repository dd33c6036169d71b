"""``fal.container``: an App's custom container image, described by a Dockerfile.

On fal, ``image = ContainerImage.from_dockerfile_str(...)`` makes the platform build that image and
run the app in it. minifal accepts and records the image, with fal's checks, but runs the app in
the current environment (the runner's log, ``/runners`` and ``minifal runners`` say so);
``minifal dockerfile APP`` writes a Dockerfile that starts from this image and adds minifal and
the app, to build and run the same container on your own machines (docs/containers.md).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from minifal.compat.ignore_patterns import pattern_to_regex

Builder = Literal["depot", "service", "worker"]
CommandOverride = str | list[str]
BUILDERS = {"depot", "service", "worker"}
DEFAULT_COMPRESSION: str = "gzip"
DEFAULT_FORCE_COMPRESSION: bool = False

DEFAULT_DOCKERIGNORE_PATTERNS = [
    ".git",
    ".gitignore",
    ".dockerignore",
    "Dockerfile",
    "Dockerfile.*",
    "*.md",
    "__pycache__",
    "*.pyc",
    ".DS_Store",
    ".venv",
    "venv",
    ".env",
    "node_modules",
]


def _check_command_override(name: str, value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return
    raise ValueError(f"{name} must be a string or list of strings.")


@dataclass
class ContainerImage:
    """A Docker image built from ``dockerfile_str`` with ``build_args`` (fal's fields).

    Build-time ``secrets`` and registry ``registries`` credentials are kept for fidelity but never
    shown: not in ``repr``, not in pickles, not in what ``/runners`` reports.
    """

    dockerfile_str: str
    build_args: dict[str, str] = field(default_factory=dict)
    registries: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    builder: Builder | None = None
    compression: str = DEFAULT_COMPRESSION
    force_compression: bool = DEFAULT_FORCE_COMPRESSION
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    entrypoint: CommandOverride | None = None
    cmd: CommandOverride | None = None
    use_isolate: bool | None = None
    context_dir: os.PathLike[str] | str = field(default_factory=Path.cwd)
    """The build context. fal evaluates ``Path.cwd()`` once at import; here, per image."""
    dockerignore: list[str] | None = None
    dockerignore_path: os.PathLike[str] | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dockerfile_str, str) or not self.dockerfile_str.strip():
            raise ValueError(
                "Invalid dockerfile: Dockerfile is required.\n"
                "Either use ContainerImage.from_dockerfile_str() or "
                "ContainerImage.from_dockerfile() to create a container image."
            )
        self._dockerignore = DockerignoreHandler(
            context_dir=self.context_dir,
            dockerignore=self.dockerignore,
            dockerignore_path=self.dockerignore_path,
        ).get_regex_patterns()
        for registry in self.registries.values():
            if "username" not in registry or "password" not in registry:
                raise ValueError("Username and password are required for each registry")
        if self.builder and self.builder not in BUILDERS:
            raise ValueError(f"Invalid builder: {self.builder}, must be one of {BUILDERS}")
        _check_command_override("entrypoint", self.entrypoint)
        _check_command_override("cmd", self.cmd)
        if self.use_isolate is not None and not isinstance(self.use_isolate, bool):
            raise ValueError("use_isolate must be a bool.")
        if self.builder in ("service", "worker"):
            print(
                f"Warning: builder='{self.builder}' is deprecated and has been removed. "
                "All builds now use Depot. You can safely remove the builder parameter "
                "or set builder='depot'.",
                file=sys.stderr,
            )

    @classmethod
    def from_dockerfile_str(cls, text: str, **kwargs: Any) -> ContainerImage:
        return cls(dockerfile_str=text, **kwargs)

    @classmethod
    def from_dockerfile(cls, path: str | os.PathLike[str], **kwargs: Any) -> ContainerImage:
        return cls.from_dockerfile_str(Path(path).read_text(), **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles leave the credentials out; copies (below) keep them."""
        state = self.__dict__.copy()
        state["registries"] = {}
        state["secrets"] = {}
        return state

    def __copy__(self) -> ContainerImage:
        duplicate = object.__new__(type(self))
        duplicate.__dict__.update(self.__dict__)
        return duplicate

    def __deepcopy__(self, memo: dict[int, Any]) -> ContainerImage:
        duplicate = object.__new__(type(self))
        memo[id(self)] = duplicate
        duplicate.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return duplicate

    def to_dict(self) -> dict[str, Any]:
        """fal's wire form of the image (what its deploy call sends), secrets included."""
        image: dict[str, Any] = {
            "dockerfile_str": self.dockerfile_str,
            "build_args": self.build_args,
            "registries": self.registries,
            "builder": self.builder,
            "compression": self.compression,
            "force_compression": self.force_compression,
            "secrets": self.secrets,
            "docker_context_dir": str(self.context_dir),
            "docker_files_list": self.get_copy_add_sources(),
            "docker_ignore": self._dockerignore,
        }
        for name in ("entrypoint", "cmd", "use_isolate"):
            if getattr(self, name) is not None:
                image[name] = getattr(self, name)
        return image

    def get_copy_add_sources(self) -> list[str]:
        """The source paths of the Dockerfile's ``COPY``/``ADD`` instructions (context files)."""
        return DockerfileParser(content=self.dockerfile_str).parse_copy_add_sources()

    def add_dockerignore(
        self,
        patterns: list[str] | None = None,
        path: os.PathLike[str] | str | None = None,
    ) -> None:
        """Replace the ignore patterns with ``patterns`` or those of the file at ``path``."""
        if patterns is not None and path is not None:
            raise ValueError("Cannot specify both 'patterns' and 'path'. Please provide only one.")
        if patterns is None and path is None:
            raise ValueError(
                "Must specify either 'patterns' or 'path'. Please provide one of them."
            )
        handler = (
            DockerignoreHandler(dockerignore_path=path)
            if path is not None
            else DockerignoreHandler(dockerignore=patterns)
        )
        self._dockerignore = handler.get_regex_patterns()


@dataclass
class DockerignoreHandler:
    """Which files of the build context are left out, as fal decides it.

    Priority: an explicit pattern list, then an explicit ``.dockerignore`` path, then the context
    dir's ``.dockerignore``, then ``DEFAULT_DOCKERIGNORE_PATTERNS``.
    """

    context_dir: os.PathLike[str] | str | None = None
    dockerignore: list[str] | None = None
    dockerignore_path: os.PathLike[str] | str | None = None

    @staticmethod
    def _read_patterns(path: Path) -> list[str]:
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    def get_patterns(self) -> list[str]:
        if self.dockerignore is not None:
            return self.dockerignore
        if self.dockerignore_path is not None:
            path = Path(self.dockerignore_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"Specified .dockerignore file not found: {self.dockerignore_path}"
                )
            return self._read_patterns(path)
        if self.context_dir is not None:
            path = Path(self.context_dir) / ".dockerignore"
            if path.is_file():
                return self._read_patterns(path)
        return DEFAULT_DOCKERIGNORE_PATTERNS

    def get_regex_patterns(self) -> list[str]:
        regexes = (pattern_to_regex(pattern)[0] for pattern in self.get_patterns())
        return [regex for regex in regexes if regex]


_COPY_OR_ADD = re.compile(
    r"^(?P<instruction>COPY|ADD)\s+(?P<rest>.+?)(?:\s*\\)?$", re.MULTILINE | re.IGNORECASE
)
_FLAG = re.compile(r'--\w+(?:=[^\s\]]+|="[^"]*")?')


@dataclass
class DockerfileParser:
    """Reads the context files a Dockerfile copies (``COPY``/``ADD`` sources)."""

    content: str
    normalized_content: str = field(init=False)

    def __post_init__(self) -> None:
        self.normalized_content = re.sub(r"\\\n\s*", " ", self.content)

    def parse_copy_add_sources(self) -> list[str]:
        """Sources of ``COPY``/``ADD``, relative to the context; skips ``COPY --from=`` (another
        stage) and ``ADD`` of a URL; shell and JSON forms."""
        sources: list[str] = []
        for match in _COPY_OR_ADD.finditer(self.normalized_content):
            instruction = match.group("instruction").upper()
            rest = match.group("rest").strip()
            if instruction == "COPY" and re.match(r"--from=", rest, re.IGNORECASE):
                continue
            if instruction == "ADD" and re.search(r"https?://", rest, re.IGNORECASE):
                continue
            sources.extend(self._sources(rest))
        return sources

    @staticmethod
    def _sources(arguments: str) -> list[str]:
        cleaned = _FLAG.sub("", arguments).strip()
        if not cleaned:
            return []
        try:
            parts = json.loads(cleaned) if cleaned.endswith("]") else shlex.split(cleaned)
        except ValueError:
            print(
                f"[WARNING] Failed to parse instruction arguments: {arguments}. "
                "Skipping this instruction. Please check the Dockerfile syntax and try again."
            )
            return []
        if not isinstance(parts, list) or len(parts) < 2:
            return []
        return [str(source).lstrip("/") for source in parts[:-1]]


__all__ = [
    "BUILDERS",
    "DEFAULT_COMPRESSION",
    "DEFAULT_DOCKERIGNORE_PATTERNS",
    "DEFAULT_FORCE_COMPRESSION",
    "Builder",
    "CommandOverride",
    "ContainerImage",
    "DockerfileParser",
    "DockerignoreHandler",
]
