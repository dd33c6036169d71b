"""The pure parts of the fork server, in milliseconds and without processes: which modules a
ready runner's record keeps (``library_modules``), how a record is written, read and named
(``import_record.py``), whether the fleet uses a fork server (``MINIFAL_FORK_SERVER``), and
what makes forking unsafe (``fork_hazards``) or fails to preload (``preload``), and the fork
server's preload asked by the fleet, step by step over a socket pair."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest

from minifal.fleet.backends.local import fork_server_enabled
from minifal.host import envs
from minifal.runner import fork_server
from minifal.runner.fork_safety import fork_hazards
from minifal.runner.fork_server import ForkServer
from minifal.runner.import_record import (
    RECORDS_DIR_NAME,
    library_modules,
    read_record,
    record_path,
    write_record,
)
from minifal.runner.imports_preload import preload

STDLIB_DIR = str(Path(json.__file__).parent.parent)


def fake_module(name: str, origin: str | None, spec_name: str | None = None) -> ModuleType:
    """A module object as ``sys.modules`` holds it, with a spec that says where it came from."""
    module = ModuleType(name)
    module.__spec__ = ModuleSpec(spec_name or name, None, origin=origin)
    return module


# -- library_modules -------------------------------------------------------------------------------


@pytest.mark.unit
def test_built_in_and_frozen_modules_are_kept_whatever_the_library_path() -> None:
    modules = {"sys": sys, "os": os, "fake_builtin": fake_module("fake_builtin", "built-in")}
    assert sys.__spec__.origin == "built-in" and os.__spec__.origin == "frozen"
    assert library_modules(modules, []) == ["fake_builtin", "os", "sys"]


@pytest.mark.unit
def test_a_module_under_a_library_path_entry_is_kept(tmp_path: Path) -> None:
    library = tmp_path / "site-packages"
    modules = {
        "json": json,
        "pkg.sub": fake_module("pkg.sub", str(library / "pkg" / "sub.py")),
    }
    assert library_modules(modules, [STDLIB_DIR, str(library)]) == ["json", "pkg.sub"]


@pytest.mark.unit
def test_a_module_outside_the_library_path_is_dropped(tmp_path: Path) -> None:
    """The App's own files and generated code (a cache dir) are not on the library path."""
    library = tmp_path / "lib"
    modules = {
        "app_helper": fake_module("app_helper", str(tmp_path / "app_helper.py")),
        "inductor_graph": fake_module("inductor_graph", str(tmp_path / "cache" / "graph.py")),
        "kept": fake_module("kept", str(library / "kept.py")),
    }
    assert library_modules(modules, [str(library)]) == ["kept"]


@pytest.mark.unit
def test_a_sibling_directory_that_shares_a_library_entrys_prefix_does_not_count(
    tmp_path: Path,
) -> None:
    """``/x/lib`` on the path does not make ``/x/lib2/mod.py`` a library module."""
    modules = {"mod": fake_module("mod", str(tmp_path / "lib2" / "mod.py"))}
    assert library_modules(modules, [str(tmp_path / "lib")]) == []


@pytest.mark.unit
def test_a_relative_library_entry_counts_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    modules = {"mod": fake_module("mod", str(tmp_path / "lib" / "mod.py"))}
    assert library_modules(modules, ["lib"]) == ["mod"]


@pytest.mark.unit
def test_aliases_main_and_modules_without_a_spec_or_file_are_dropped(tmp_path: Path) -> None:
    library = str(tmp_path)
    no_spec = ModuleType("no_spec")
    no_spec.__spec__ = None
    modules = {
        "alias_of_json": json,  # sys.modules["alias_of_json"] is json: spec.name differs
        "renamed": fake_module("renamed", str(tmp_path / "renamed.py"), spec_name="original"),
        "__main__": fake_module("__main__", str(tmp_path / "main.py")),
        "no_spec": no_spec,
        "namespace": fake_module("namespace", None),
        "blocked": None,  # what ``sys.modules[name] = None`` leaves
        "json": json,
    }
    assert library_modules(modules, [library, STDLIB_DIR]) == ["json"]


@pytest.mark.unit
def test_library_modules_are_sorted(tmp_path: Path) -> None:
    names = ["zeta", "alpha", "mid.inner", "mid"]
    modules = {name: fake_module(name, str(tmp_path / f"{name}.py")) for name in names}
    assert library_modules(modules, [str(tmp_path)]) == ["alpha", "mid", "mid.inner", "zeta"]


@pytest.mark.unit
def test_this_process_modules_from_the_standard_library_are_found() -> None:
    """A smoke check on the real ``sys.modules``: ``json`` comes from the standard library."""
    names = library_modules(dict(sys.modules), list(sys.path))
    assert "json" in names and "sys" in names and "__main__" not in names


# -- write_record / read_record --------------------------------------------------------------------


@pytest.mark.unit
def test_a_record_round_trips_and_its_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "data" / RECORDS_DIR_NAME / "record.txt"
    names = ["json", "numpy", "numpy.linalg"]
    assert write_record(path, names) is True
    assert read_record(path) == names
    assert path.read_text() == "json\nnumpy\nnumpy.linalg\n"


@pytest.mark.unit
def test_writing_the_same_names_again_reports_no_change(tmp_path: Path) -> None:
    path = tmp_path / "record.txt"
    assert write_record(path, ["a", "b"]) is True
    mtime = path.stat().st_mtime_ns
    assert write_record(path, ["a", "b"]) is False
    assert path.stat().st_mtime_ns == mtime
    assert write_record(path, ["a", "b", "c"]) is True
    assert read_record(path) == ["a", "b", "c"]


@pytest.mark.unit
def test_writing_leaves_only_the_record_behind(tmp_path: Path) -> None:
    """The record is replaced through a temporary file that does not stay."""
    path = tmp_path / "record.txt"
    write_record(path, ["a"])
    write_record(path, ["a", "b"])
    assert [entry.name for entry in tmp_path.iterdir()] == ["record.txt"]


@pytest.mark.unit
def test_reading_a_missing_record_gives_no_names(tmp_path: Path) -> None:
    assert read_record(tmp_path / "nothing-yet.txt") == []
    assert read_record(tmp_path / "no-dir" / "nothing-yet.txt") == []


@pytest.mark.unit
def test_reading_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "record.txt"
    path.write_text("a\n\nb\n\n")
    assert read_record(path) == ["a", "b"]


@pytest.mark.unit
def test_an_empty_record_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "record.txt"
    assert write_record(path, []) is True
    assert read_record(path) == []
    assert write_record(path, []) is False


# -- record_path -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_two_app_files_have_two_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = record_path(data, str(tmp_path / "one" / "app.py"))
    second = record_path(data, str(tmp_path / "two" / "app.py"))
    assert first != second
    assert first.parent == second.parent == data / RECORDS_DIR_NAME


@pytest.mark.unit
def test_a_class_name_does_not_change_the_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = str(tmp_path / "app.py")
    assert record_path(data, f"{app}::MyApp") == record_path(data, app)
    assert record_path(data, f"{app}::Other") == record_path(data, app)


@pytest.mark.unit
def test_a_relative_and_an_absolute_reference_to_one_file_share_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    assert record_path(data, "app.py") == record_path(data, str(tmp_path / "app.py"))


@pytest.mark.unit
def test_a_record_path_is_stable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = str(tmp_path / "app.py")
    assert record_path(data, app) == record_path(data, app)
    assert record_path(data, app).suffix == ".txt"


# -- fork_server_enabled ---------------------------------------------------------------------------

FORK_SERVER_ENV = envs.FORK_SERVER.name


@pytest.mark.unit
def test_the_fork_server_is_on_by_default() -> None:
    assert fork_server_enabled({}) is True
    assert fork_server_enabled({FORK_SERVER_ENV: ""}) is True  # empty: unset


@pytest.mark.unit
@pytest.mark.parametrize(("value", "enabled"), [("on", True), ("ON", True), ("off", False)])
def test_the_fork_server_setting_is_read(value: str, enabled: bool) -> None:
    assert fork_server_enabled({FORK_SERVER_ENV: value}) is enabled


@pytest.mark.unit
def test_the_fork_server_setting_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FORK_SERVER_ENV, "off")
    assert fork_server_enabled() is False
    monkeypatch.delenv(FORK_SERVER_ENV)
    assert fork_server_enabled() is True


@pytest.mark.unit
@pytest.mark.parametrize("value", ["yes", "1", "true"])
def test_a_bad_fork_server_setting_raises(value: str) -> None:
    with pytest.raises(ValueError, match=FORK_SERVER_ENV):
        fork_server_enabled({FORK_SERVER_ENV: value})


# -- fork_hazards / preload ------------------------------------------------------------------------


@pytest.mark.process
def test_a_running_python_thread_is_a_fork_hazard() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(10.0,), name="fork-hazard-probe")
    thread.start()
    try:
        hazards = fork_hazards()
        assert any("fork-hazard-probe" in hazard for hazard in hazards), hazards
    finally:
        stop.set()
        thread.join(10.0)
    assert not thread.is_alive()
    assert not any("fork-hazard-probe" in hazard for hazard in fork_hazards())


@pytest.fixture
def import_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for modules written by the test; they leave ``sys.modules``
    at its end."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("fork_preload_"):
            del sys.modules[name]


@pytest.mark.unit
def test_preload_imports_what_it_can_and_names_what_failed(import_dir: Path) -> None:
    (import_dir / "fork_preload_ok.py").write_text("VALUE = 1\n")
    (import_dir / "fork_preload_raises.py").write_text("raise RuntimeError('at import')\n")
    (import_dir / "fork_preload_exits.py").write_text("raise SystemExit(2)\n")
    names = [
        "fork_preload_ok",
        "fork_preload_raises",
        "fork_preload_exits",
        "fork_preload_missing",
        "json",  # already imported: counts, not imported again
    ]
    imported, failed = preload(names)
    assert imported == 2
    assert failed == ["fork_preload_raises", "fork_preload_exits", "fork_preload_missing"]
    assert "fork_preload_ok" in sys.modules


# -- the fork server's preload (its loop's steps, driven by hand over a socket pair) ---------------


@pytest.fixture
def control() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The fleet's end and the server's end of a control socket."""
    fleet, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with fleet, server:
        fleet.settimeout(5.0)
        yield fleet, server


def answer(fleet: socket.socket) -> dict:
    return json.loads(fleet.recv(1 << 20))


def preload_all(server: ForkServer) -> None:
    """What the server's loop does between messages while a preload runs."""
    while server.preload is not None:
        server.preload_step(server.preload)


@pytest.mark.unit
def test_a_preload_imports_what_the_record_adds_and_does_not_retry_what_failed(
    import_dir: Path,
    control: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This process's own threads (pytest's, other tests') are not what is tested here: the
    # check itself is, with real threads, above and in test_fork_server.py.
    monkeypatch.setattr(fork_server, "fork_hazards", lambda: [])
    (import_dir / "fork_preload_new.py").write_text("VALUE = 1\n")
    (import_dir / "fork_preload_raises.py").write_text("raise RuntimeError('at import')\n")
    record = import_dir / "record.txt"
    write_record(record, ["fork_preload_new", "fork_preload_raises", "json"])
    fleet, end = control
    server = ForkServer(end, record)

    fleet.send(b'{"preload": true}')
    assert server.receive()
    assert server.preload is not None and "fork_preload_new" not in sys.modules  # not yet
    preload_all(server)
    first = answer(fleet)["preloaded"]
    assert "fork_preload_new" in sys.modules
    assert (first["imported"], first["failed"], first["hazards"]) == (
        1,
        ["fork_preload_raises"],
        [],
    )

    fleet.send(b'{"preload": true}')
    assert server.receive()
    assert server.preload is None  # nothing left to import: answered at once
    second = answer(fleet)["preloaded"]
    assert (second["imported"], second["failed"], second["hazards"]) == (0, [], [])


@pytest.mark.unit
def test_a_start_during_a_preload_that_made_forking_unsafe_is_refused_and_ends_the_preload(
    import_dir: Path,
    control: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start between two imports of a preload checks again whether forking is safe; here an
    import had started a thread (the check's answer stands in for it: a real thread would be
    this test process's): nothing is forked, the preload ends with the hazard and the start
    is refused."""
    monkeypatch.setattr(fork_server, "fork_hazards", lambda: ["Python threads running: pool"])
    for name in ("fork_preload_first", "fork_preload_second"):
        (import_dir / f"{name}.py").write_text("VALUE = 1\n")
    record = import_dir / "record.txt"
    write_record(record, ["fork_preload_first", "fork_preload_second"])
    fleet, end = control
    server = ForkServer(end, record)
    fleet.send(b'{"preload": true}')
    assert server.receive()
    assert server.preload is not None
    server.preload_step(server.preload)  # the first module

    read_end, write_end = os.pipe()
    try:
        socket.send_fds(fleet, [json.dumps({"start": "7", "args": []}).encode()], [write_end])
        assert server.receive()
    finally:
        os.close(read_end)
        os.close(write_end)
    preloaded = answer(fleet)["preloaded"]
    assert preloaded["imported"] == 1 and "fork_preload_second" not in sys.modules
    assert preloaded["hazards"] == ["Python threads running: pool"]
    refused = answer(fleet)
    assert refused["failed"] == "7" and "pool" in refused["error"], refused
    assert server.preload is None and server.children == {}
