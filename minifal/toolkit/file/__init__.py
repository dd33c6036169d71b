"""``fal.toolkit.file``: ``File``, ``CompressedFile``, ``FileField`` and the file repositories."""

from minifal.toolkit.file.file import (
    BUILT_IN_REPOSITORIES,
    DEFAULT_REPOSITORY,
    FALLBACK_REPOSITORY,
    IN_MEMORY_REPOSITORY,
    IS_PYDANTIC_V2,
    OBJECT_LIFECYCLE_PREFERENCE_KEY,
    CompressedFile,
    File,
    FileField,
    FileRepositoryFactory,
    PendingFile,
    files_root,
    get_builtin_repository,
    request_lifecycle_preference,
    resolve_stored_file,
)

__all__ = [
    "BUILT_IN_REPOSITORIES",
    "DEFAULT_REPOSITORY",
    "FALLBACK_REPOSITORY",
    "IN_MEMORY_REPOSITORY",
    "IS_PYDANTIC_V2",
    "OBJECT_LIFECYCLE_PREFERENCE_KEY",
    "CompressedFile",
    "File",
    "FileField",
    "FileRepositoryFactory",
    "PendingFile",
    "files_root",
    "get_builtin_repository",
    "request_lifecycle_preference",
    "resolve_stored_file",
]
