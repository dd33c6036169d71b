"""``File`` / ``Image`` / URL fetching / downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image as PILImage
from pydantic import BaseModel, ValidationError

from minifal.exceptions import FileTooLargeError
from minifal.toolkit.downloads import (
    DownloadError,
    clone_repository,
    download_file,
    download_model_weights,
)
from minifal.toolkit.file import File, files_root, resolve_stored_file
from minifal.toolkit.image import Image, ImageSize, ImageSizeInput, encoding, get_image_size
from minifal.toolkit.url_fetch import fetch_bytes

PUBLIC_URL = "http://files.example:9000/"
PAYLOAD = bytes(range(256)) * 40  # 10 KiB


def _png_bytes(width: int = 7, height: int = 5) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/payload.bin":
            self._send(200, PAYLOAD)
        elif path == "/picture.png":
            self._send(200, _png_bytes(), content_type="image/png")
        elif path == "/redirect":
            self._send(302, b"", extra={"Location": "/payload.bin"})
        elif path == "/named":
            self._send(200, PAYLOAD, extra={"Content-Disposition": 'attachment; filename="w.bin"'})
        elif path == "/unsized":
            # No Content-Length: the size cap can only be enforced while streaming.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(PAYLOAD)
        elif path == "/truncated":
            # Announces more than it sends, then hangs up: a download cut short.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) * 2))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        else:
            self._send(404, b"not found")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/octet-stream",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(directory))
    monkeypatch.setenv("MINIFAL_PUBLIC_URL", PUBLIC_URL)
    return directory


def _stored_path(url: str) -> Path | None:
    assert url.startswith(PUBLIC_URL + "files/")
    return resolve_stored_file(unquote(url[len(PUBLIC_URL + "files/") :]))


def _files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


# --- File outputs ---------------------------------------------------------------------------


@pytest.mark.unit
def test_from_bytes_stores_under_data_dir_and_links_public_url(data_dir: Path) -> None:
    file = File.from_bytes(b"hello", file_name="greeting hi.txt")

    assert file.content_type == "text/plain"
    assert file.file_size == 5
    assert file.url.startswith(PUBLIC_URL + "files/")
    assert file.url.endswith("/greeting%20hi.txt")
    stored = _stored_path(file.url)
    assert stored is not None
    assert stored.read_bytes() == b"hello"
    assert stored.parent.parent == files_root() == data_dir / "files"
    assert [p.name for p in _files_under(data_dir)] == ["greeting hi.txt"]


@pytest.mark.unit
def test_file_json_excludes_cached_bytes() -> None:
    file = File.from_bytes(b"\x00\x01", content_type="application/x-thing")

    dumped = file.model_dump()
    assert set(dumped) == {"url", "content_type", "file_name", "file_size"}
    assert "file_data" not in file.model_dump_json()
    assert file.file_data == b"\x00\x01"
    assert file.file_name.endswith(".bin")


@pytest.mark.unit
def test_in_memory_repository_gives_data_url(data_dir: Path) -> None:
    file = File.from_bytes(b"abc", content_type="text/plain", repository="in_memory")

    assert file.url == "data:text/plain;base64," + base64.b64encode(b"abc").decode()
    assert _files_under(data_dir) == []


@pytest.mark.unit
def test_fal_repository_names_store_locally_and_unknown_ones_fail() -> None:
    assert File.from_bytes(b"x", repository="fal_v3").url.startswith(PUBLIC_URL)
    with pytest.raises(ValueError, match="Unknown file repository 'gcs'"):
        File.from_bytes(b"x", repository="gcs")


@pytest.mark.unit
def test_file_name_cannot_escape_its_directory(data_dir: Path) -> None:
    file = File.from_bytes(b"x", file_name="../../etc/.passwd")

    assert file.file_name == "passwd"
    assert _stored_path(file.url) is not None


@pytest.mark.unit
def test_from_path_copies_file_and_guesses_type(tmp_path: Path) -> None:
    source = tmp_path / "clip.json"
    source.write_bytes(b'{"a": 1}')

    file = File.from_path(source)

    assert (file.file_name, file.content_type, file.file_size) == (
        "clip.json",
        "application/json",
        8,
    )
    assert _stored_path(file.url).read_bytes() == b'{"a": 1}'
    assert file.as_bytes() == b'{"a": 1}'


@pytest.mark.unit
def test_save_writes_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    file = File.from_bytes(b"content", repository="in_memory")
    target = tmp_path / "out" / "saved.txt"

    assert file.save(target) == target
    assert target.read_bytes() == b"content"
    with pytest.raises(FileExistsError):
        file.save(target)
    File.from_bytes(b"new", repository="in_memory").save(target, overwrite=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["saved.txt"]


# --- File inputs ----------------------------------------------------------------------------


class _Input(BaseModel):
    image: Image
    attachment: File | None = None


@pytest.mark.unit
def test_input_accepts_url_string_and_object() -> None:
    parsed = _Input.model_validate(
        {"image": "https://example.com/cat.png", "attachment": {"url": "data:,hi"}}
    )

    assert parsed.image.url == "https://example.com/cat.png"
    assert parsed.image.file_data is None
    assert parsed.attachment.as_bytes() == b"hi"


@pytest.mark.unit
@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "/etc/passwd", "http:///nohost"]
)
def test_input_rejects_other_schemes_as_validation_error(url: str) -> None:
    for value in (url, {"url": url}):
        with pytest.raises(ValidationError) as caught:
            _Input.model_validate({"image": value})
        assert caught.value.errors()[0]["loc"][0] == "image"


@pytest.mark.process
def test_input_url_is_fetched_lazily(server: str) -> None:
    parsed = _Input.model_validate({"image": f"{server}/picture.png"})

    picture = parsed.image.to_pil()

    assert picture.size == (7, 5)
    assert picture.getpixel((0, 0)) == (10, 200, 30)


# --- Images ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_from_pil_png_round_trip_keeps_pixels() -> None:
    original = PILImage.new("RGB", (33, 17))
    original.putdata(
        [((x * 7) % 256, (y * 13) % 256, (x * y) % 256) for y in range(17) for x in range(33)]
    )

    image = Image.from_pil(original)

    assert (image.width, image.height) == (33, 17)
    assert image.content_type == "image/png"
    assert image.file_name.endswith(".png")
    assert image.to_pil().tobytes() == original.tobytes()
    with PILImage.open(_stored_path(image.url)) as stored:
        assert stored.format == "PNG"
        assert stored.convert("RGB").tobytes() == original.tobytes()


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_from_pil_png_is_lossless_in_every_mode(mode: str) -> None:
    """fpng writes RGB and RGBA, Pillow the rest: the pixels come back the same either way."""
    rng = random.Random(mode)
    original = PILImage.frombytes("RGBA", (64, 48), rng.randbytes(64 * 48 * 4)).convert(mode)

    image = Image.from_pil(original)

    assert image.content_type == "image/png"
    with PILImage.open(io.BytesIO(image.as_bytes())) as stored:
        assert stored.format == "PNG"
        assert stored.mode == original.mode
        assert stored.tobytes() == original.tobytes()


@pytest.mark.unit
def test_png_encoder_choice() -> None:
    assert encoding.fast_png_applies(PILImage.new("RGB", (4, 4))) == (encoding.fpng is not None)
    assert not encoding.fast_png_applies(PILImage.new("L", (4, 4)))
    with_profile = PILImage.new("RGB", (4, 4))
    with_profile.info["icc_profile"] = b"profile"
    assert not encoding.fast_png_applies(with_profile)


@pytest.mark.unit
def test_from_pil_jpeg_from_rgba() -> None:
    image = Image.from_pil(PILImage.new("RGBA", (40, 30), (255, 0, 0, 128)), format="jpg")

    assert image.content_type == "image/jpeg"
    assert image.file_name.endswith((".jpg", ".jpeg"))
    decoded = image.to_pil()
    assert decoded.size == (40, 30)
    assert PILImage.open(io.BytesIO(image.as_bytes())).format == "JPEG"


@pytest.mark.unit
def test_image_from_bytes_reads_dimensions() -> None:
    image = Image.from_bytes(_png_bytes(12, 9), "png", repository="in_memory")

    assert (image.width, image.height) == (12, 9)
    assert image.url.startswith("data:image/png;base64,")
    assert image.to_pil().size == (12, 9)
    assert set(image.model_dump()) == {
        "url", "content_type", "file_name", "file_size", "width", "height"
    }  # fmt: skip


@pytest.mark.unit
def test_image_from_path_reads_dimensions(tmp_path: Path) -> None:
    source = tmp_path / "frame.webp"
    PILImage.new("RGB", (21, 11), "blue").save(source, format="WEBP")

    image = Image.from_path(source)

    assert (image.width, image.height, image.content_type) == (21, 11, "image/webp")


@pytest.mark.unit
def test_image_size_presets_and_custom_sizes() -> None:
    class SizeInput(BaseModel):
        image_size: ImageSizeInput = "square_hd"

    expected = {
        "square_hd": (1024, 1024),
        "square": (512, 512),
        "portrait_4_3": (768, 1024),
        "portrait_16_9": (576, 1024),
        "landscape_4_3": (1024, 768),
        "landscape_16_9": (1024, 576),
    }
    for preset, (width, height) in expected.items():
        size = get_image_size(SizeInput(image_size=preset).image_size)
        assert (size.width, size.height) == (width, height)
    custom = SizeInput.model_validate({"image_size": {"width": 640, "height": 480}}).image_size
    assert get_image_size(custom) == ImageSize(width=640, height=480)
    assert get_image_size(SizeInput().image_size).width == 1024
    for bad in ("huge", {"width": 0, "height": 10}, {"width": 20000, "height": 10}):
        with pytest.raises(ValidationError):
            SizeInput.model_validate({"image_size": bad})
    with pytest.raises(TypeError):
        get_image_size("huge")  # type: ignore[arg-type]


# --- Fetching -------------------------------------------------------------------------------


@pytest.mark.unit
def test_fetch_data_urls_base64_and_percent_encoded() -> None:
    assert (
        fetch_bytes("data:application/octet-stream;base64," + base64.b64encode(PAYLOAD).decode())
        == PAYLOAD
    )
    assert fetch_bytes("data:text/plain,a%20b%2Cc") == b"a b,c"
    with pytest.raises(DownloadError):
        fetch_bytes("data:;base64,!!!")


@pytest.mark.process
def test_fetch_http_follows_redirects(server: str) -> None:
    assert fetch_bytes(f"{server}/redirect") == PAYLOAD


@pytest.mark.process
def test_fetch_size_limit_with_and_without_content_length(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileTooLargeError):
        fetch_bytes(f"{server}/payload.bin", max_bytes=len(PAYLOAD) - 1)
    with pytest.raises(FileTooLargeError):
        fetch_bytes(f"{server}/unsized", max_bytes=len(PAYLOAD) * 3)
    monkeypatch.setenv("MINIFAL_MAX_DOWNLOAD_BYTES", "1000")
    with pytest.raises(FileTooLargeError):
        File(url=f"{server}/payload.bin").as_bytes()
    with pytest.raises(FileTooLargeError):
        File(url="data:," + "x" * 1001).as_bytes()


@pytest.mark.process
def test_fetch_failures_raise_download_error(server: str) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_bytes(f"{server}/missing")
    with pytest.raises(DownloadError):
        fetch_bytes(f"{server}/truncated")
    with pytest.raises(DownloadError):
        fetch_bytes("file:///etc/passwd")


# --- Serving stored files -------------------------------------------------------------------


@pytest.mark.unit
def test_resolve_stored_file_rejects_traversal(data_dir: Path, tmp_path: Path) -> None:
    file = File.from_bytes(b"ok", file_name="a.txt")
    relative = unquote(file.url[len(PUBLIC_URL + "files/") :])
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (files_root() / "escape").mkdir()
    (files_root() / "escape" / "link.txt").symlink_to(secret)
    (files_root() / "escape" / ".a.txt.part").write_text("partial")

    assert resolve_stored_file(relative) == _stored_path(file.url)
    for bad in [
        "",
        "../secret.txt",
        f"{relative}/../../../secret.txt",
        str(secret),
        "/" + relative,
        "escape/link.txt",
        "escape/.a.txt.part",
        relative.replace("/", "\\"),
        relative + "\x00",
        relative.split("/")[0],  # a directory, not a file
        "nothing/here.txt",
    ]:
        assert resolve_stored_file(bad) is None, bad


# --- Downloads ------------------------------------------------------------------------------


@pytest.mark.process
def test_download_file_names_and_reuse(server: str, data_dir: Path) -> None:
    first = download_file(f"{server}/named", "downloads")

    assert first == data_dir / "downloads" / "w.bin"
    assert first.read_bytes() == PAYLOAD
    first.write_bytes(b"x" * len(PAYLOAD))  # same size: kept, unless forced
    assert download_file(f"{server}/named", "downloads").read_bytes() == b"x" * len(PAYLOAD)
    assert download_file(f"{server}/named", "downloads", force=True).read_bytes() == PAYLOAD
    assert download_file(f"{server}/payload.bin", data_dir / "d").name == "payload.bin"


@pytest.mark.process
def test_download_file_failure_leaves_no_partial_file(server: str, data_dir: Path) -> None:
    target_dir = data_dir / "weights"
    target_dir.mkdir()
    (target_dir / "truncated").write_bytes(b"previous")

    with pytest.raises(DownloadError):
        download_file(f"{server}/truncated", target_dir, force=True)
    with pytest.raises(FileTooLargeError):
        download_file(f"{server}/unsized", target_dir, filesize_limit=0)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server}/missing", target_dir)

    assert os.listdir(target_dir) == ["truncated"]
    assert (target_dir / "truncated").read_bytes() == b"previous"


@pytest.mark.process
def test_download_model_weights_goes_under_data_dir_once(server: str, data_dir: Path) -> None:
    url = f"{server}/payload.bin"

    path = download_model_weights(url)

    assert path.parent.parent == data_dir / ".fal" / "model_weights"
    assert len(path.parent.name) == 64
    assert path.read_bytes() == PAYLOAD
    path.write_bytes(b"local edit")  # present: returned without asking the server again
    assert download_model_weights(url).read_bytes() == b"local edit"


@pytest.mark.process
def test_clone_repository_from_local_git_repo(tmp_path: Path, data_dir: Path) -> None:
    origin = tmp_path / "origin" / "tool.git"
    origin.mkdir(parents=True)

    def git(*args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@e", *args]
        return subprocess.run(
            command, cwd=origin, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (origin / "tool.py").write_text("VERSION = 1\n")
    git("add", "tool.py")
    git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD")
    (origin / "tool.py").write_text("VERSION = 2\n")
    git("commit", "-qam", "two")

    latest = clone_repository(str(origin))
    pinned = clone_repository(str(origin), commit_hash=first)

    assert latest == data_dir / ".fal" / "repos" / "tool"
    assert (latest / "tool.py").read_text() == "VERSION = 2\n"
    assert pinned.name == f"tool-{first[:8]}"
    assert (pinned / "tool.py").read_text() == "VERSION = 1\n"
    assert clone_repository(str(origin), commit_hash=first) == pinned
    assert sorted(os.listdir(pinned.parent)) == ["tool", f"tool-{first[:8]}"]
    with pytest.raises(DownloadError, match="git clone failed"):
        clone_repository(str(tmp_path / "missing"))
