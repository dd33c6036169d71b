"""fal.toolkit's surface: fal's module paths, the schemas fal produces (compared with the real
fal SDK in the reference venv), constraints that validate, file repositories, compressed files,
the safety checker's local meaning, and the SSRF-safe fetcher's refusals."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image as PILImage
from pydantic import BaseModel, ValidationError

from minifal.host import envs
from minifal.toolkit import (
    CompressedFile,
    File,
    FileUploadException,
    ImageSizeConstraints,
    ImageSizeField,
    ImageSizeInput,
    ImageValidationConfig,
    VideoValidationConfig,
    to_xfal,
)
from minifal.toolkit.constraints import ConstraintViolation
from minifal.toolkit.file import get_builtin_repository
from minifal.toolkit.file.providers import notice
from minifal.toolkit.file.providers.fal import (
    FalFileRepositoryV3,
    FalV2Token,
    FalV3Token,
    FalV3TokenManager,
    MultipartUploadV3,
    fal_v2_token_manager,
    fal_v3_token_manager,
)
from minifal.toolkit.file.providers.gcp import GoogleStorageRepository
from minifal.toolkit.file.providers.local import reserve_with_policy, save_with_policy
from minifal.toolkit.file.providers.r2 import R2Repository
from minifal.toolkit.file.providers.s3 import S3Repository
from minifal.toolkit.file.storage import resolve_stored_file
from minifal.toolkit.file.types import FileData, FileRepository
from minifal.toolkit.image.hf_models import ModelWeightsMissing
from minifal.toolkit.utils.download_utils import _hash_url
from minifal.toolkit.utils.ssrf import SSRFError, is_globally_routable_ip, ssrf_safe_get

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "http://files.test:8080/"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(directory))
    monkeypatch.setenv("MINIFAL_PUBLIC_URL", PUBLIC_URL)
    return directory


def _stored(url: str) -> Path:
    path = resolve_stored_file(url.removeprefix(PUBLIC_URL + "files/"))
    assert path is not None, url
    return path


# -- fal's import paths --------------------------------------------------------------------------

FAL_IMPORTS = [
    ("fal.toolkit.image.safety_checker", "postprocess_images"),
    ("fal.toolkit.file.providers.fal", "FalFileRepositoryV3"),
    ("fal.toolkit.utils.download_utils", "_hash_url"),
    ("fal.toolkit.utils.download_utils", "download_model_weights"),
    ("fal.toolkit.file.file", "File"),
    ("fal.toolkit.audio.audio", "Audio"),
    ("fal.toolkit.video.video", "Video"),
    ("fal.toolkit.kv", "KVStore"),
    ("fal.toolkit.pydantic", "FalBaseModel"),
    ("fal.toolkit.image.nsfw_filter", "run_nsfw_estimation"),
]


@pytest.mark.process
@pytest.mark.parametrize(("module", "name"), FAL_IMPORTS)
def test_fal_module_paths_import_through_the_alias(module: str, name: str) -> None:
    """Run in a fresh interpreter: ``import fal.X`` maps to ``minifal.X`` as in an app file."""
    code = (
        "from minifal.compat.fal_alias import install_fal_alias; install_fal_alias(); "
        f"import importlib; m = importlib.import_module({module!r}); getattr(m, {name!r}); "
        "print(m.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "minifal" + module[len("fal") :]


@pytest.mark.unit
def test_old_minifal_paths_still_work() -> None:
    from minifal.toolkit.file import File as FileFromPackage
    from minifal.toolkit.file import files_root, resolve_stored_file  # noqa: F401
    from minifal.toolkit.image import Image, ImageSize, ImageSizeInput, get_image_size  # noqa

    assert FileFromPackage is File
    assert importlib.import_module("minifal.toolkit.file.file").File is File


@pytest.mark.unit
def test_from_url_and_hash_url_helpers() -> None:
    file = File._from_url("https://example.com/a.png")
    assert file.url == "https://example.com/a.png" and file.file_size is None
    assert _hash_url("https://x") == hashlib.sha256(b"https://x").hexdigest()


# -- schemas: compared with the real fal SDK -------------------------------------------------------

SCHEMA_MODELS = textwrap.dedent(
    """
    import json, warnings
    from typing import Optional
    from pydantic import BaseModel
    from fal.toolkit import (Audio, AudioField, CompressedFile, FalBaseModel, Field, File,
        FileField, Hidden, Image, ImageField, ImageSizeConstraints, ImageSizeField,
        ImageSizeInput, Video, VideoField, VideoNormalizationConfig, VideoValidationConfig)

    warnings.simplefilter("ignore")

    class Nested(FalBaseModel):
        FIELD_ORDERS = ["b"]
        a: int = 1
        b: str = Field(default="x", description="B")

    class Input(FalBaseModel):
        FIELD_ORDERS = ["prompt", "image_size"]
        seed: Optional[int] = Hidden(Field(default=None, description="Seed"))
        prompt: str = Field(description="The prompt", examples=["a fox"])
        image_size: ImageSizeInput = ImageSizeField(
            default="square",
            constraints=ImageSizeConstraints(min_width=64, max_width=2048, multiple_of=8),
            ui={"important": True},
        )
        video_url: str = VideoField(
            description="A video",
            constraints=VideoValidationConfig(max_duration=10.0, max_file_size=1000),
            combined_constraints=VideoValidationConfig(max_duration=30.0),
            normalization=VideoNormalizationConfig(fps=24.0),
        )
        audio_url: str = AudioField(description="An audio file")
        image_url: str = ImageField(description="An image", json_schema_extra={"x": 1})
        file_url: str = FileField(description="A file")
        nested: Nested = Field(default_factory=Nested)

    class Ignoring(FalBaseModel):
        SCHEMA_IGNORES = {"debug"}
        debug: bool = False
        value: int = 0

    class Output(BaseModel):
        image: Image
        audio: Audio
        video: Video
        file: File
        archive: CompressedFile

    print(json.dumps({
        "input": Input.model_json_schema(),
        "ignoring": Ignoring.model_json_schema(),
        "output": Output.model_json_schema(mode="serialization"),
    }))
    """
)


def _reference_python() -> Path | None:
    configured = envs.FAL_PYTHON.get()
    candidate = Path(configured) if configured else ROOT / ".venv-fal" / "bin" / "python"
    return candidate if candidate.exists() else None


def _schemas(command: list[str], cwd: str | None = None) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.process
def test_schemas_match_real_fal() -> None:
    """The same model source, run under fal 1.83 and under minifal, gives the same schemas:
    FalBaseModel's order and hidden fields, the *Field helpers' x-fal and ui, the file types."""
    reference = _reference_python()
    if reference is None:
        pytest.skip("no reference fal venv (.venv-fal): run scripts/setup-env.sh")
    under_fal = _schemas([str(reference), "-I", "-c", SCHEMA_MODELS], cwd="/")
    alias = "from minifal.compat.fal_alias import install_fal_alias\ninstall_fal_alias()\n"
    under_minifal = _schemas([sys.executable, "-c", alias + SCHEMA_MODELS])

    assert under_minifal == under_fal
    properties = under_fal["input"]["properties"]
    assert list(under_minifal["input"]["properties"]) == list(properties)
    assert list(properties)[:2] == ["prompt", "image_size"]
    assert properties["seed"]["ui"] == {"hidden": True}


# -- constraints validate ------------------------------------------------------------------------


@pytest.mark.unit
def test_unsatisfiable_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="min_width"):
        ImageSizeConstraints(min_width=100, max_width=50)
    with pytest.raises(ValueError, match="together"):
        VideoValidationConfig(min_aspect_ratio=0.5)


class _SizedInput(BaseModel):
    size: ImageSizeInput = ImageSizeField(
        default="square", constraints=ImageSizeConstraints(max_width=1000, multiple_of=64)
    )


@pytest.mark.unit
def test_image_size_field_enforces_its_constraints() -> None:
    assert _SizedInput(size={"width": 512, "height": 512})
    with pytest.raises(ValidationError) as bad_preset:
        _SizedInput(size="square_hd")  # 1024 wide
    assert bad_preset.value.errors()[0]["loc"] == ("size",)
    assert "maximum of 1000px" in str(bad_preset.value)
    with pytest.raises(ValidationError, match="multiple of 64"):
        _SizedInput(size={"width": 500, "height": 512})


@pytest.mark.unit
def test_validation_configs_check_known_properties() -> None:
    image = ImageValidationConfig(max_file_size=100, min_width=10, timeout=5)
    image.check_image(width=10, height=10, file_size=100)
    with pytest.raises(ConstraintViolation, match="file size 101"):
        image.check_image(file_size=101)
    assert to_xfal(image) == {"max_file_size": 100, "min_width": 10}

    video = VideoValidationConfig(max_duration=5.0, min_fps=10, max_frames=100)
    video.check_video(duration=5.0, fps=24, frames=100)
    with pytest.raises(ConstraintViolation, match=r"duration 6\.0s"):
        video.check_video(duration=6.0)
    with pytest.raises(ConstraintViolation, match="fps 5"):
        video.check_video(fps=5)


# -- repositories, reservations, multipart, compressed files ------------------------------------


@pytest.mark.unit
def test_fal_hosted_repositories_store_in_the_data_dir() -> None:
    file = File.from_bytes(b"abc", file_name="a.txt", repository=FalFileRepositoryV3())
    assert _stored(file.url).read_bytes() == b"abc"
    assert isinstance(get_builtin_repository("cdn"), FalFileRepositoryV3)


@pytest.fixture
def file_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    """A fresh once-per-process notice registry (earlier tests may have used it), captured."""
    monkeypatch.setattr(notice, "notices", notice.OncePerProcess())
    caplog.set_level(logging.WARNING, logger="minifal.files")
    return caplog


def _warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


CLOUD_CREDENTIAL_VARS = (
    "GCLOUD_SA_JSON",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "R2_CREDS_JSON",
)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("make", "save_kwargs", "warning"),
    [
        (
            lambda: GoogleStorageRepository(bucket_name="media", folder="renders/2024"),
            {},
            "GoogleStorageRepository (Google Cloud Storage)",
        ),
        (lambda: S3Repository(bucket_name="media"), {"key": "renders/2024"}, "Amazon S3"),
        (lambda: R2Repository(bucket_name="media", key="renders/2024"), {}, "Cloudflare R2"),
    ],
    ids=["gcs", "s3", "r2"],
)
def test_cloud_bucket_is_a_directory_of_the_data_dir(
    make: Callable[[], FileRepository],
    save_kwargs: dict,
    warning: str,
    data_dir: Path,
    file_warnings: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No credentials anywhere; fal's object key (folder, uuid_name) below the bucket's dir."""
    for variable in CLOUD_CREDENTIAL_VARS:
        monkeypatch.delenv(variable, raising=False)
    repository = make()
    bucket_dir = data_dir / "files" / "media" / "renders" / "2024"

    urls = [
        repository.save(FileData(body, "image/png", "out.png"), **save_kwargs)
        for body in (b"first", b"second")
    ]
    for url, body in zip(urls, (b"first", b"second"), strict=True):
        assert url.startswith(PUBLIC_URL + "files/media/renders/2024/")
        stored = _stored(url)
        assert stored.parent == bucket_dir and stored.name.endswith("_out.png")
        assert stored.read_bytes() == body
    assert urls[0] != urls[1]
    assert len(_warnings_naming(file_warnings, warning)) == 1
    assert "nothing is uploaded to the cloud" in _warnings_naming(file_warnings, warning)[0]


@pytest.mark.unit
def test_cloud_bucket_through_file_and_its_builtin_id(data_dir: Path) -> None:
    through_instance = File.from_bytes(
        b"abc", file_name="a.txt", repository=R2Repository(bucket_name="outputs")
    )
    assert _stored(through_instance.url).parent == data_dir / "files" / "outputs"
    through_id = File.from_bytes(b"xyz", file_name="b.txt", repository="gcp_storage")
    assert _stored(through_id.url).read_bytes() == b"xyz"
    assert _stored(through_id.url).parent == data_dir / "files" / "fal_file_storage"


@pytest.mark.unit
def test_bucket_folder_cannot_leave_the_bucket_dir(data_dir: Path) -> None:
    repository = GoogleStorageRepository(bucket_name="b", folder="../../etc/./.hidden/x")
    url = repository.save(FileData(b"1", "text/plain", "f.txt"))
    assert _stored(url).parent == data_dir / "files" / "b" / "etc" / "hidden" / "x"
    with pytest.raises(ValueError, match="bucket_name"):
        S3Repository(bucket_name="..")


@dataclass(frozen=True)
class _UploadPolicy:
    """The shape of fal's ``UploadPolicy`` (fal keeps it private; minifal has none)."""

    url: str
    fields: dict


POLICY = _UploadPolicy(
    "https://callers-bucket.s3.us-east-1.amazonaws.com/", {"key": "uploads/${filename}"}
)


@pytest.mark.unit
def test_save_with_policy_stores_in_the_data_dir(
    tmp_path: Path, file_warnings: pytest.LogCaptureFixture
) -> None:
    from_bytes = save_with_policy(POLICY, "out.png", b"png bytes", "image/png")
    assert _stored(from_bytes).read_bytes() == b"png bytes"
    assert _stored(from_bytes).name == "out.png"

    source = tmp_path / "video.mp4"
    source.write_bytes(b"\0" * 3000)
    from_path = save_with_policy(
        {"url": POLICY.url, "fields": POLICY.fields},
        "video.mp4",
        source,
        "video/mp4",
        name="uploads/renamed.mp4",
    )
    assert _stored(from_path).name == "renamed.mp4"
    assert _stored(from_path).read_bytes() == source.read_bytes()

    warned = _warnings_naming(file_warnings, "upload policy")
    assert len(warned) == 1
    assert POLICY.url in warned[0] and "uploads/${filename}" in warned[0]


@pytest.mark.unit
def test_reserve_with_policy_is_a_local_reservation(
    file_warnings: pytest.LogCaptureFixture,
) -> None:
    reservation = reserve_with_policy(POLICY, "later.txt", "text/plain", None)
    relative = reservation.url.removeprefix(PUBLIC_URL + "files/")
    assert resolve_stored_file(relative) is None  # 404 until complete
    reservation.complete(b"done")
    assert _stored(reservation.url).read_bytes() == b"done"
    save_with_policy(POLICY, "again.txt", b"x", "text/plain")
    assert len(_warnings_naming(file_warnings, "upload policy")) == 1


@pytest.mark.unit
def test_token_managers_hand_out_local_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("a token manager opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for valid_for, lifetime in [
        (timedelta(hours=3), timedelta(hours=4)),  # what was asked, and an hour more
        (7200, timedelta(hours=3)),
        (None, timedelta(hours=1)),
    ]:
        before = datetime.now(UTC)
        token = fal_v3_token_manager.get_token(valid_for)
        after = datetime.now(UTC)
        assert before + lifetime <= token.expires_at <= after + lifetime
        assert isinstance(token, FalV3Token)
        assert (token.token_type, token.base_upload_url) == ("Local", PUBLIC_URL + "files/")
        assert not token.is_expired(offset=valid_for)
        assert "***" in repr(token) and token.token not in repr(token)

    assert type(fal_v2_token_manager.get_token()) is FalV2Token
    assert FalV3TokenManager().get_token(timedelta(minutes=5)).token_type == "Local"
    with pytest.raises(ValueError, match="valid_for"):
        fal_v3_token_manager.get_token(-1)


class _FullBucket(FileRepository):
    def save(self, data: FileData, *args: object, **kwargs: object) -> str:
        raise FileUploadException("bucket full")


@pytest.mark.unit
def test_failed_repository_falls_back() -> None:
    with pytest.raises(FileUploadException, match="bucket full"):
        File.from_bytes(b"x", repository=_FullBucket())
    file = File.from_bytes(b"x", repository=_FullBucket(), fallback_repository="in_memory")
    assert file.url.startswith("data:")


@pytest.mark.unit
def test_reserve_then_complete(data_dir: Path) -> None:
    pending = File.reserve(content_type="text/plain", file_name="later.txt")
    relative = pending.url.removeprefix(PUBLIC_URL + "files/")
    assert resolve_stored_file(relative) is None  # 404 until complete
    done = pending.complete(b"now")
    assert done.url == pending.url and done.file_size == 3
    assert _stored(done.url).read_bytes() == b"now"

    dropped = File.reserve(file_name="never.txt")
    dropped.abort()
    assert not any(p.name == "never.txt" for p in data_dir.rglob("*"))


@pytest.mark.unit
def test_multipart_upload_joins_parts_in_order() -> None:
    upload = MultipartUploadV3("big.bin", chunk_size=4)
    url = upload.upload(b"0123456789")
    assert _stored(url).read_bytes() == b"0123456789"
    assert not any(p.name.startswith(".parts") for p in _stored(url).parent.iterdir())


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.unit
def test_compressed_file_extracts_once_and_cleans_up() -> None:
    archive = CompressedFile.from_bytes(_zip_bytes({"a.txt": b"A", "b.txt": b"B"}))
    names = [path.name for path in archive]
    assert names == ["a.txt", "b.txt"]
    assert [p.read_bytes() for p in archive.glob("*.txt")] != []
    extract_dir = Path(archive.extract_dir)
    del archive
    assert not extract_dir.exists()


@pytest.mark.unit
def test_compressed_file_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIFAL_MAX_DOWNLOAD_BYTES", "1000")
    archive = CompressedFile.from_bytes(_zip_bytes({"big": b"\0" * 5000}))
    with pytest.raises(ValueError, match="expands to 5000 bytes"):
        list(archive)


# -- image helpers, the safety checker, ssrf ---------------------------------------------------


@pytest.mark.unit
def test_postprocess_without_checker_needs_no_model() -> None:
    from minifal.toolkit.image.safety_checker import postprocess_images

    images = [PILImage.new("RGB", (4, 4), (255, 0, 0))]
    result = postprocess_images(images, enable_safety_checker=False)
    assert result["has_nsfw_concepts"] == [False]
    assert result["images"][0].getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.unit
def test_filter_by_blacks_out_flagged_images() -> None:
    from minifal.toolkit.image import filter_by

    red = PILImage.new("RGB", (3, 2), (255, 0, 0))
    kept, blacked = filter_by([False, True], [red, red])
    assert kept is red
    assert blacked.size == (3, 2) and blacked.getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.process
def test_safety_checker_without_weights_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No weights can be downloaded here: the error must name the model and the cache."""
    code = textwrap.dedent(
        """
        from PIL import Image
        from minifal.toolkit.image.safety_checker import postprocess_images
        from minifal.toolkit.image.hf_models import ModelWeightsMissing
        try:
            postprocess_images([Image.new("RGB", (8, 8))])
        except ModelWeightsMissing as exc:
            print(exc)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Falconsai/nsfw_image_detection" in done.stdout
    assert str(tmp_path / "hf") in done.stdout
    assert issubclass(ModelWeightsMissing, RuntimeError)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("2606:4700::1111", True),
    ],
)
def test_public_address_check(address: str, public: bool) -> None:
    assert is_globally_routable_ip(address) is public


@pytest.mark.unit
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://localhost:9/x", "file:///etc/passwd"]
)
def test_ssrf_safe_get_refuses_non_public_targets(url: str) -> None:
    with pytest.raises(SSRFError):
        ssrf_safe_get(url, timeout=2)
