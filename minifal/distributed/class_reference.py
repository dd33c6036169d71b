"""Name a class so that a freshly spawned process can import it.

Worker processes are spawned (a new interpreter, not a fork), so the worker class travels as
its module and qualified name. A class of an app file that minifal loaded from a path (module
``minifal_app_<stem>``, importable by no name) also carries the file, which the worker process
loads under the same module name, as the runner did.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path


class ClassReferenceError(TypeError):
    """The class cannot be found by name in another process."""


@dataclass(frozen=True)
class ClassReference:
    module: str
    qualname: str
    file: str | None

    @classmethod
    def of(cls, target: type) -> ClassReference:
        if "<locals>" in target.__qualname__:
            raise ClassReferenceError(
                f"{target.__qualname__} is defined inside a function: define the worker class "
                "at module level, so that worker processes can import it"
            )
        module = sys.modules.get(target.__module__)
        file = getattr(module, "__file__", None)
        return cls(target.__module__, target.__qualname__, file)

    def resolve(self) -> type:
        """The class, importing (or loading from its file) its module in this process."""
        found: object = self._module()
        for part in self.qualname.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise ClassReferenceError(f"{self.module} has no {self.qualname}")
        if not isinstance(found, type):
            raise ClassReferenceError(f"{self.module}.{self.qualname} is not a class")
        return found

    def _module(self) -> object:
        if self.module in sys.modules:
            return sys.modules[self.module]
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name != self.module or self.file is None:
                raise
        return self._load_file(Path(self.file))

    def _load_file(self, path: Path) -> object:
        from minifal.compat.fal_alias import install_fal_alias

        install_fal_alias()  # the app file imports fal, as in the runner process
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(self.module, path)
        if spec is None or spec.loader is None:
            raise ClassReferenceError(f"cannot import {path} for {self.qualname}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module] = module
        spec.loader.exec_module(module)
        return module
