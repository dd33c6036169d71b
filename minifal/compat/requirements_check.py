"""fal installs an App's ``requirements``; minifal only checks them and says what is missing."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement


def unmet_requirements(requirements: list[str]) -> list[str]:
    """One line per requirement that the current environment does not satisfy."""
    problems = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            problems.append(f"{text!r} is not a valid requirement")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{text}: {requirement.name} is not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(
            installed, prereleases=True
        ):
            problems.append(f"{text}: {requirement.name} {installed} is installed")
    return problems
