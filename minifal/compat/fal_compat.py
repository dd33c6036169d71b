"""What every public name of fal's SDK means in minifal: the compatibility table's rows.

Long because it is data: one row per public name, kept in one place so that the table
(docs/fal-compatibility.md) is generated from it.

One :class:`Row` per public name, listing every fal module that exposes it (fal re-exports the
same object from several modules: ``fal.toolkit.File`` is ``fal.toolkit.file.file.File``). The
status says what minifal does with it:

- ``implemented``: it does here what it does on fal;
- ``accepted``: an app may use it unchanged; it has a local meaning, which ``meaning`` says;
- ``not applicable``: it needs fal's platform; the name exists (so the app loads) and using it
  raises an error that says why, which ``meaning`` says too.

``scripts/fal_compat_table.py`` checks these rows against fal's installed package (every fal
name has a row, every row's name exists in the module minifal maps it to) and writes
``docs/fal-compatibility.md`` from them. A name is looked up in minifal at the same path with
``fal`` replaced by ``minifal`` (``fal.toolkit.kv.KVStore`` -> ``minifal.toolkit.kv.KVStore``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from minifal.host import envs

Status = Literal["implemented", "accepted", "not applicable"]
IMPLEMENTED: Status = "implemented"
ACCEPTED: Status = "accepted"
NOT_APPLICABLE: Status = "not applicable"

SCOPE = (
    "fal",
    "fal.app",
    "fal.ref",
    "fal.realtime",
    "fal.toolkit",
    "fal.container",
    "fal.distributed",
    "fal.exceptions",
)
"""The fal modules the table covers; those in ``RECURSIVE_SCOPE`` with all their public
submodules, as fal's installed package has them."""
RECURSIVE_SCOPE = ("fal.toolkit", "fal.distributed", "fal.exceptions")
FAL_VERSION = "1.83.0"
"""The fal release the table was written against (the reference venv installs it)."""

NOTES = f"""\
## Local meanings worth knowing

- **Files.** There is no CDN: every fal-hosted repository (`"fal"`, `"fal_v3"`, `"cdn"`,
  `FalFileRepositoryV3()`...) stores into `DATA_DIR/files`, served by every runner and the
  gateway at `/files/...`; `"in_memory"` makes `data:` URLs as on fal. Cloud buckets (GCS, S3,
  R2) need no credentials and upload nothing: a bucket is a directory of that store
  (`DATA_DIR/files/<bucket>/<folder or key>/<uuid>_<name>`, fal's object key), and the first
  save of each in a process logs a warning saying so. Upload policies (`save_with_policy`,
  `reserve_with_policy`) store into the data dir too, warning once that the caller's destination
  was ignored. fal's CDN token managers hand out local token records (`token_type` `"Local"`,
  the `/files/` URL, an expiry from `valid_for`) and call no network. `File.as_bytes()` fetches
  an input's URL (size-capped) instead of raising as fal does. `file_data` is a field, as on
  fal, but is left out of the JSON schema, so a model holding a file stays one OpenAPI
  component (fal's OpenAPI splits it into `X-Input` and `X-Output`).
- **Safety checker.** `fal.toolkit.image.safety_checker` loads the same models as fal
  (`Falconsai/nsfw_image_detection` for version 2, `CompVis/stable-diffusion-safety-checker` for
  version 1) from the Hugging Face cache under `HF_HOME` (`DATA_DIR/.cache/huggingface` by
  default), once per runner, on its GPU or else the CPU. When a model is not in the cache and
  cannot be downloaded, it raises `ModelWeightsMissing` naming the model and the cache dir.
  `postprocess_images(..., enable_safety_checker=False)` needs no model.
- **Constraints.** As on fal, `ImageSizeConstraints`, `ImageValidationConfig`,
  `VideoValidationConfig` and `VideoNormalizationConfig` refuse unsatisfiable bounds and publish
  their limits under `x-fal` (`to_xfal`, `ImageSizeField`, `VideoField`). minifal also enforces
  them: `ImageSizeField(constraints=...)` answers 422 for a size outside them, and
  `check_size` / `check_image` / `check_video` raise `ConstraintViolation` (a `ValueError`) for
  an endpoint that knows its input's properties (minifal decodes no video itself).
- **KVStore.** A real store on your machines. By default SQLite in `DATA_DIR/kv.sqlite3`,
  shared by every runner of the host (WAL, lock waits bounded at 5 s, then
  `KVStoreException`); with `{envs.KV_REDIS_URL.name}=redis://host:6379/0` (and `pip install
  redis`), Redis, for runners on several hosts. fal's rules hold: string values, `ttl` from
  60 s to 30 days, 30 days by default, deleting a missing key succeeds.
- **SSRF-safe fetching.** `fal.toolkit.utils.ssrf` refuses non-public addresses and pins each
  connection to the checked address, as fal does. minifal's own input fetching (`File`,
  `Image.to_pil`, `read_image_from_url`) does not refuse private addresses: a self-hosted app's
  inputs often live on its own network.
"""
"""Hand-written notes rendered into the doc after its summary."""


@dataclass(frozen=True)
class Row:
    name: str
    modules: tuple[str, ...]
    status: Status
    meaning: str


def _row(name: str, modules: str, status: Status, meaning: str) -> Row:
    return Row(name, tuple(modules.split()), status, meaning)


TK = "fal.toolkit"
FILE = "fal.toolkit.file fal.toolkit.file.file"
IMG = "fal.toolkit.image fal.toolkit.image.image"
DL = "fal.toolkit.utils fal.toolkit.utils.download_utils"
PROV = "fal.toolkit.file.providers.fal"
SSRF = "fal.toolkit.utils.ssrf"
NSFW = "fal.toolkit.image.nsfw_filter fal.toolkit.image.nsfw_filter.inference"
DIST_UTILS = "fal.distributed.utils"
GPU_EXC = "fal.exceptions fal.exceptions.gpu"
DATA_DIR_STORE = "stores into DATA_DIR/files, served by every runner at /files/... (no CDN)"
POLICY_IGNORED = (
    "; the caller's destination (the policy) cannot be honoured locally: one warning per "
    "process names it"
)

ROWS: tuple[Row, ...] = (
    # -- fal ---------------------------------------------------------------------------------
    _row(
        "App",
        "fal fal.app",
        IMPLEMENTED,
        "the App model: settings, setup/teardown, endpoints; class keywords minifal does not "
        "know (fal's private _scheduler_options...) are kept in host_kwargs, logged once at "
        "debug; _add_extra_routes and provide_hints (X-Fal-Runner-Hints on every answer) as on "
        "fal; spawn() serves it in a runner process of its own",
    ),
    _row("endpoint", "fal fal.app", IMPLEMENTED, "a POST route (or websocket) on the runner"),
    _row(
        "realtime",
        "fal fal.realtime",
        IMPLEMENTED,
        "msgpack websocket sessions, modes inferred from hints; buffering and max_batch_size "
        "(with can_batch) as on fal",
    ),
    _row(
        "HealthCheck",
        "fal",
        IMPLEMENTED,
        "its endpoint is the runner's readiness probe, then called every 15 s (POST, or its "
        "method); failures replace the runner",
    ),
    # -- fal.app -----------------------------------------------------------------------------
    _row(
        "AppClient",
        "fal.app",
        IMPLEMENTED,
        "one method per HTTP endpoint against a runner's or gateway's URL; connect() serves the "
        "App in a local runner process (minifal serve) for the block",
    ),
    _row(
        "AppClientError",
        "fal.app",
        IMPLEMENTED,
        "a non-2xx answer: message, status_code, headers",
    ),
    _row(
        "EndpointClient",
        "fal.app",
        IMPLEMENTED,
        "POSTs one endpoint's input, returns its output model",
    ),
    _row(
        "AppSpawnInfo",
        "fal.app",
        ACCEPTED,
        "a local runner process: url, application, wait(), stop(); its output goes to stderr "
        "(fal's logs/stream/future belong to its remote run)",
    ),
    _row(
        "wrap_app",
        "fal.app",
        ACCEPTED,
        "calling it serves the App in the foreground, as minifal serve does",
    ),
    _row(
        "RequestContext",
        "fal.app",
        IMPLEMENTED,
        "request_id, endpoint, headers, lifecycle_preference (the caller's "
        "x-fal-object-lifecycle-preference; fal's gateway always sends one) and upload_policy "
        "(always None: outputs go to the data dir), plus base_url",
    ),
    _row("REQUEST_ID_KEY", "fal.app", IMPLEMENTED, "x-fal-request-id"),
    _row("REQUEST_ENDPOINT_KEY", "fal.app", IMPLEMENTED, "x-fal-endpoint"),
    _row("CDN_TOKEN_KEY", "fal.app", ACCEPTED, "fal's CDN token header; never sent (no CDN)"),
    _row(
        "REALTIME_APP_REQUIREMENTS",
        "fal.app",
        ACCEPTED,
        "what fal adds to a realtime App's requirements; minifal's install has both",
    ),
    _row(
        "WMA_APP_REQUIREMENTS",
        "fal.app",
        ACCEPTED,
        "what fal adds for fal.wma Apps (fal.wma is not part of minifal)",
    ),
    _row("DEFAULT_APP_FILES_IGNORE", "fal.app", ACCEPTED, "fal's default app_files_ignore"),
    _row(
        "DEFAULT_PLATFORM_STARTUP_TIMEOUT",
        "fal.app",
        ACCEPTED,
        "600; minifal enforces startup_timeout only when the App sets one",
    ),
    _row("PART_FINDER_RE", "fal.app", ACCEPTED, "fal's default-name pattern"),
    _row(
        "open_isolate_channel",
        "fal.app",
        ACCEPTED,
        "returns None: no isolate agent runs here",
    ),
    _row("logger", "fal.app fal.realtime", ACCEPTED, "a logging.Logger"),
    # -- fal.ref -----------------------------------------------------------------------------
    _row(
        "get_current_app",
        "fal.ref",
        IMPLEMENTED,
        "the App instance the runner serves (set before setup(), cleared after teardown())",
    ),
    _row(
        "set_current_app",
        "fal.ref",
        IMPLEMENTED,
        "set by the runner; a second App in the same process is an error, as on fal",
    ),
    _row("current_app", "fal.ref", IMPLEMENTED, "the module attribute get_current_app() reads"),
    # -- fal.realtime ------------------------------------------------------------------------
    _row("msgpack_encode_message", "fal.realtime", IMPLEMENTED, "the default realtime encoder"),
    _row("msgpack_decode_message", "fal.realtime", IMPLEMENTED, "the default realtime decoder"),
    _row(
        "function",
        "fal",
        ACCEPTED,
        "runs the function in this process (fal's run_local); its options are checked and "
        "recorded, not used to build a remote environment",
    ),
    _row(
        "cached",
        "fal",
        IMPLEMENTED,
        "results kept for the life of the runner process, keyed by the function's source",
    ),
    _row(
        "BillingComponents",
        "fal",
        IMPLEMENTED,
        "checked as on fal, recorded in the app's manifest, exposed in /metrics",
    ),
    _row(
        "BillingDeclaration",
        "fal",
        IMPLEMENTED,
        "checked as on fal, recorded in the app's manifest, exposed in /metrics",
    ),
    _row(
        "FalServerlessKeyCredentials",
        "fal",
        ACCEPTED,
        "a key id and secret: the Authorization header a gateway started with --auth-key checks",
    ),
    _row(
        "sync_dir",
        "fal",
        ACCEPTED,
        "copies the directory into the data dir (DATA_DIR for /data), skipped when unchanged",
    ),
    _row("__version__", "fal", ACCEPTED, "minifal's version (this table names fal's)"),
    _row("version_tuple", "fal", ACCEPTED, "minifal's version as a tuple"),
    _row(
        "ContainerImage",
        "fal fal.container",
        ACCEPTED,
        "checked and recorded; the app runs in the current environment (said in the runner's "
        "log and `minifal runners`); `minifal dockerfile` writes a Dockerfile from this image "
        "plus minifal",
    ),
    # -- fal.container -------------------------------------------------------------------------
    _row("Builder", "fal.container", IMPLEMENTED, "the builder names fal accepts (type)"),
    _row("BUILDERS", "fal.container", IMPLEMENTED, "the builder names fal accepts"),
    _row("CommandOverride", "fal.container", IMPLEMENTED, "a command as a string or list (type)"),
    _row(
        "DEFAULT_COMPRESSION",
        "fal.container",
        ACCEPTED,
        "fal's image-layer compression setting; nothing is pushed locally",
    ),
    _row(
        "DEFAULT_FORCE_COMPRESSION",
        "fal.container",
        ACCEPTED,
        "fal's image-layer compression setting; nothing is pushed locally",
    ),
    _row(
        "DEFAULT_DOCKERIGNORE_PATTERNS",
        "fal.container",
        IMPLEMENTED,
        "the patterns left out of a build context",
    ),
    _row("DockerignoreHandler", "fal.container", IMPLEMENTED, ".dockerignore matching"),
    _row(
        "DockerfileParser",
        "fal.container",
        IMPLEMENTED,
        "finds the files a Dockerfile's COPY/ADD lines need",
    ),
    # -- fal.distributed ---------------------------------------------------------------------
    _row(
        "DistributedRunner",
        "fal.distributed fal.distributed.worker",
        IMPLEMENTED,
        "starts world_size worker processes, one GPU each (CPU and gloo without GPUs), "
        "torch.distributed initialised (NCCL on GPUs); a crashed worker is a runner crash "
        "(the call answers 503, the runner exits with code 5 and is restarted); see "
        "docs/distributed.md",
    ),
    _row(
        "DistributedWorker",
        "fal.distributed fal.distributed.worker",
        IMPLEMENTED,
        "the per-process worker: rank, world_size, device (cuda:<rank>, or cpu), setup, "
        "__call__, teardown, add_streaming_result",
    ),
    _row(
        "distributed_serialize",
        DIST_UTILS,
        IMPLEMENTED,
        "fal's wire format between workers and runner: images, tensors and arrays encoded, "
        "then pickled",
    ),
    _row(
        "distributed_deserialize",
        DIST_UTILS,
        IMPLEMENTED,
        "reads what distributed_serialize (or a JSON string) holds: images back as PIL images, "
        "tensors and arrays as themselves",
    ),
    _row(
        "encode_text_event",
        DIST_UTILS,
        IMPLEMENTED,
        "a server-sent event (data: JSON), images as data URLs; pydantic models encoded too",
    ),
    _row(
        "format_for_serialization",
        DIST_UTILS,
        IMPLEMENTED,
        "tensors, arrays and images made serializable as fal does; JPEG drops alpha instead "
        "of failing",
    ),
    _row(
        "format_deserialized_data",
        DIST_UTILS,
        IMPLEMENTED,
        "the inverse of format_for_serialization",
    ),
    _row("has_type_name", DIST_UTILS, IMPLEMENTED, "a type check by class name, without imports"),
    _row("is_torch_tensor", DIST_UTILS, IMPLEMENTED, "a torch tensor, without importing torch"),
    _row("is_numpy_array", DIST_UTILS, IMPLEMENTED, "a numpy array, without importing numpy"),
    _row(
        "is_pil_image",
        DIST_UTILS,
        ACCEPTED,
        "true for PIL's images only (fal's also matches any class named Image, such as "
        "fal.toolkit.Image)",
    ),
    _row(
        "launch_distributed_processes",
        DIST_UTILS,
        IMPLEMENTED,
        "fal's lower-level launcher: a function in world_size spawned processes of one process "
        "group (NCCL on cuda:<rank>, gloo without CUDA); returns torch's process context",
    ),
    _row(
        "wrap_distributed_worker",
        DIST_UTILS,
        IMPLEMENTED,
        "the body of one launched process: joins the process group, runs the function, leaves",
    ),
    _row(
        "KeepAliveTimer",
        DIST_UTILS,
        IMPLEMENTED,
        "calls a function after an idle interval (start, reset, cancel); a daemon timer, so a "
        "pending keepalive never holds the process's exit",
    ),
    # -- fal.exceptions ------------------------------------------------------------------------
    _row("FalServerlessException", "fal.exceptions", IMPLEMENTED, "base of fal's exceptions"),
    _row("AppException", "fal.exceptions", IMPLEMENTED, "answered with its status and message"),
    _row(
        "FieldException",
        "fal.exceptions",
        IMPLEMENTED,
        "answered in FastAPI's 422 shape naming the field; billable_units in x-fal-billable-units",
    ),
    _row("RequestCancelledException", "fal.exceptions", IMPLEMENTED, "answered 499"),
    _row(
        "FileTooLargeError",
        "fal.exceptions",
        ACCEPTED,
        "raised when a file given by URL passes its size limit, and answered 413 (on fal it "
        "comes from the deploy's file sync)",
    ),
    _row(
        "AppFileUploadException",
        "fal.exceptions",
        IMPLEMENTED,
        "an upload of the app's files failed (raised by fal's deploy; kept for except clauses)",
    ),
    _row(
        "GPUException",
        GPU_EXC,
        IMPLEMENTED,
        "an AppException answered 503 with its message (retried on another runner), its "
        "traceback logged; an uncaught error naming a GPU library answers as GPUException()",
    ),
    _row("GPUOutOfMemoryException", GPU_EXC, IMPLEMENTED, "a GPUException: answered 503"),
    _row(
        "CUDAOutOfMemoryException",
        GPU_EXC,
        IMPLEMENTED,
        "answered 503 'CUDA error: out of memory', as is an uncaught CUDA out-of-memory error",
    ),
    _row(
        "UnauthenticatedException",
        "fal.exceptions fal.exceptions.auth",
        ACCEPTED,
        "never raised: minifal needs no fal credentials; the name exists for except clauses",
    ),
    _row(
        "catch_gpu_exceptions",
        GPU_EXC,
        IMPLEMENTED,
        "turns CUDA errors inside the block into GPUException",
    ),
    # -- fal.toolkit: files ----------------------------------------------------------------------
    _row(
        "File",
        f"{TK} {FILE}",
        IMPLEMENTED,
        "fal's fields and JSON; from_bytes/from_path/reserve " + DATA_DIR_STORE + "; inputs "
        "accept http(s) and data: URLs, fetched lazily with a size cap; File._from_url too. "
        "file_data is a field but left out of the JSON schema (one schema component per model)",
    ),
    _row(
        "CompressedFile",
        f"{TK} {FILE}",
        IMPLEMENTED,
        "a zip File; iterating or glob() extracts it once into a private temp dir "
        "(extracted size capped)",
    ),
    _row("FileField", f"{TK} {FILE} fal.toolkit.pydantic", IMPLEMENTED, 'Field + ui.field "file"'),
    _row("PendingFile", FILE, IMPLEMENTED, "a reserved URL: complete(bytes|path) or abort()"),
    _row(
        "DEFAULT_REPOSITORY",
        FILE,
        ACCEPTED,
        '"local" (the data dir); fal\'s "fal_v3" names the same store here',
    ),
    _row(
        "FALLBACK_REPOSITORY",
        FILE,
        ACCEPTED,
        "empty: the data dir has no second store (fallback lists passed by apps are honoured)",
    ),
    _row(
        "BUILT_IN_REPOSITORIES",
        FILE,
        IMPLEMENTED,
        "repository ids: local/fal/fal_v3 (data dir), in_memory (data: URLs), gcp_storage/r2 "
        "(bucket directories of the data dir)",
    ),
    _row("get_builtin_repository", FILE, IMPLEMENTED, "the repository an id names"),
    _row("FileRepositoryFactory", FILE, IMPLEMENTED, "type of a repository factory"),
    _row(
        "OBJECT_LIFECYCLE_PREFERENCE_KEY",
        FILE,
        ACCEPTED,
        "fal's object-lifetime header; read, and ignored by the data-dir store",
    ),
    _row(
        "request_lifecycle_preference",
        FILE,
        ACCEPTED,
        "parses fal's object-lifetime header; the data-dir store keeps files until cleaned",
    ),
    _row(
        "IS_PYDANTIC_V2",
        "fal.toolkit.file fal.toolkit.file.file fal.toolkit.pydantic fal.toolkit.types",
        IMPLEMENTED,
        "True: minifal needs pydantic 2",
    ),
    _row("FileData", "fal.toolkit.file.types", IMPLEMENTED, "bytes + content type + safe name"),
    _row("FileRepository", "fal.toolkit.file.types", IMPLEMENTED, "the repository protocol"),
    _row("RepositoryId", "fal.toolkit.file.types", IMPLEMENTED, 'fal\'s ids, plus "local"'),
    _row("Reservation", "fal.toolkit.file.types", IMPLEMENTED, "a URL handed out before bytes"),
    _row(
        "LocalFileRepository",
        "fal.toolkit.file.providers.local",
        ACCEPTED,
        "minifal's own store: " + DATA_DIR_STORE + " (fal's hands uploads to a node service)",
    ),
    _row(
        "reserve_with_policy",
        "fal.toolkit.file.providers.local",
        ACCEPTED,
        "a URL in the data-dir store, answering 404 until complete()" + POLICY_IGNORED,
    ),
    _row(
        "save_with_policy",
        "fal.toolkit.file.providers.local",
        ACCEPTED,
        "stores the bytes or file into the data-dir store and returns its URL" + POLICY_IGNORED,
    ),
    *(
        _row(name, PROV, ACCEPTED, "fal's hosted storage: " + DATA_DIR_STORE)
        for name in (
            "FalFileRepositoryBase",
            "FalFileRepository",
            "FalFileRepositoryV2",
            "FalFileRepositoryV3",
            "FalCDNFileRepository",
            "InternalFalFileRepositoryV3",
        )
    ),
    _row("InMemoryRepository", PROV, IMPLEMENTED, "data: URLs, as on fal"),
    *(
        _row(
            name,
            PROV,
            ACCEPTED,
            "multipart upload into the data dir: parts kept aside, joined in order by complete()",
        )
        for name in (
            "MultipartUpload",
            "MultipartUploadV3",
            "MultipartUploadGCS",
            "InternalMultipartUploadV3",
        )
    ),
    *(
        _row(name, PROV, ACCEPTED, "fal's upload-client setting; informational (no CDN calls)")
        for name in (
            "DEFAULT_REQUEST_TIMEOUT",
            "PUT_REQUEST_TIMEOUT",
            "MAX_ATTEMPTS",
            "BASE_DELAY",
            "MAX_DELAY",
            "RETRY_CODES",
            "MAX_ERROR_RESPONSE_BYTES",
        )
    ),
    _row("FalV2Token", PROV, ACCEPTED, "a token record; the managers make local ones (no CDN)"),
    _row("FalV3Token", PROV, ACCEPTED, "a token record; the managers make local ones (no CDN)"),
    *(
        _row(
            name,
            PROV,
            ACCEPTED,
            'get_token(valid_for) gives a local token record (token_type "Local", the /files/ '
            "URL, expiring valid_for + 1 h from now); no CDN, no network call",
        )
        for name in (
            "FalV2TokenManager",
            "FalV3TokenManager",
            "fal_v2_token_manager",
            "fal_v3_token_manager",
        )
    ),
    _row("VariableReference", PROV, IMPLEMENTED, "a mutable box"),
    _row("VariableType", PROV, IMPLEMENTED, "its type variable"),
    *(
        _row(
            name,
            f"fal.toolkit.file.providers.{module}",
            ACCEPTED,
            "a bucket directory of the data dir: no credentials needed, save() stores under "
            "DATA_DIR/files/{bucket}/{folder or key}/ and returns the runner's URL; nothing is "
            "uploaded to the cloud (warned once per process)",
        )
        for name, module in (
            ("GoogleStorageRepository", "gcp"),
            ("S3Repository", "s3"),
            ("R2Repository", "r2"),
        )
    ),
    _row(
        "DEFAULT_URL_TIMEOUT",
        "fal.toolkit.file.providers.gcp fal.toolkit.file.providers.r2 "
        "fal.toolkit.file.providers.s3",
        ACCEPTED,
        "fal's signed-URL lifetime; informational",
    ),
    # -- fal.toolkit: images -----------------------------------------------------------------------
    _row(
        "Image",
        f"{TK} {IMG}",
        IMPLEMENTED,
        "File + width/height; from_pil (PNG level 1, JPEG 95), from_bytes, to_pil; fal's schema",
    ),
    _row("ImageField", f"{TK} {IMG} fal.toolkit.pydantic", IMPLEMENTED, 'ui.field "image"'),
    _row(
        "ImageSizeField",
        f"{TK} {IMG}",
        IMPLEMENTED,
        "publishes its constraints under x-fal as fal does, and also enforces them (422)",
    ),
    _row("ImageSizeInput", f"{TK} {IMG}", IMPLEMENTED, "ImageSize or a preset name"),
    _row("get_image_size", f"{TK} {IMG}", IMPLEMENTED, "the size a preset or ImageSize means"),
    _row("ImageSize", IMG, IMPLEMENTED, "width/height, 1 to 14142"),
    _row("ImageSizePreset", IMG, IMPLEMENTED, "fal's six presets"),
    _row("IMAGE_SIZE_PRESETS", IMG, IMPLEMENTED, "fal's six presets"),
    _row("ImageFormat", IMG, IMPLEMENTED, "png, jpeg, jpg, webp, gif"),
    _row("MAX_IMAGE_DOWNLOAD_SIZE", IMG, IMPLEMENTED, "50 MB cap of read_image_from_url"),
    _row("filter_by", "fal.toolkit.image", IMPLEMENTED, "black out flagged images"),
    _row("preprocess_image", "fal.toolkit.image", IMPLEMENTED, "first frame, RGB, upright"),
    _row(
        "read_image_from_url",
        "fal.toolkit.image",
        IMPLEMENTED,
        "fetch (bounded, http(s)/data:) and decode; 422 when unreadable",
    ),
    _row(
        "load_safety_checker",
        "fal.toolkit.image.safety_checker",
        ACCEPTED,
        "loads CompVis/stable-diffusion-safety-checker from the Hugging Face cache once per "
        "process, on the GPU if any else the CPU; ModelWeightsMissing names the model and the "
        "cache when it is not there",
    ),
    _row(
        "run_safety_checker",
        "fal.toolkit.image.safety_checker",
        ACCEPTED,
        "version 1 checker, same model as fal; needs its weights in the HF cache",
    ),
    _row(
        "run_safety_checker_v2",
        "fal.toolkit.image.safety_checker",
        ACCEPTED,
        "version 2 (Falconsai/nsfw_image_detection), same model as fal; needs its weights in "
        "the HF cache",
    ),
    _row(
        "postprocess_images",
        "fal.toolkit.image.safety_checker",
        IMPLEMENTED,
        "flags and blacks out NSFW images; enable_safety_checker=False needs no model",
    ),
    _row(
        "get_model",
        "fal.toolkit.image.nsfw_filter.model",
        ACCEPTED,
        "Falconsai/nsfw_image_detection from the HF cache under HF_HOME (fal forces /data/models)",
    ),
    _row("NSFWImageDetectionInput", NSFW, IMPLEMENTED, "fal's input model"),
    _row("NSFWImageDetectionOutput", NSFW, IMPLEMENTED, "fal's output model"),
    _row("run_nsfw_estimation", NSFW, IMPLEMENTED, "NSFW probability (needs the weights)"),
    _row(
        "check_nsfw_content",
        "fal.toolkit.image.nsfw_filter.inference",
        IMPLEMENTED,
        "NSFW probability of a PIL image (needs the weights)",
    ),
    _row(
        "run_nsfw_estimation_on_fal",
        "fal.toolkit.image.nsfw_filter.inference",
        ACCEPTED,
        "fal runs it on a GPU machine of its own; here it runs in this process",
    ),
    _row("CURR_DIR", "fal.toolkit.image.nsfw_filter.env", IMPLEMENTED, "the package's dir"),
    _row(
        "get_requirements",
        "fal.toolkit.image.nsfw_filter.env",
        IMPLEMENTED,
        "the filter's pip requirements",
    ),
    # -- fal.toolkit: audio, video, constraints, pydantic ------------------------------------------
    _row(
        "Audio",
        "fal.toolkit fal.toolkit.audio fal.toolkit.audio.audio",
        IMPLEMENTED,
        'a File with ui.field "audio"; fal\'s schema',
    ),
    _row(
        "AudioField",
        "fal.toolkit fal.toolkit.audio fal.toolkit.audio.audio fal.toolkit.pydantic",
        IMPLEMENTED,
        'Field + ui.field "audio"',
    ),
    _row(
        "Video",
        "fal.toolkit fal.toolkit.video fal.toolkit.video.video",
        IMPLEMENTED,
        'a File with ui.field "video"; fal\'s schema',
    ),
    _row(
        "VideoField",
        "fal.toolkit fal.toolkit.pydantic fal.toolkit.video fal.toolkit.video.video",
        IMPLEMENTED,
        "ui.field video + constraints/normalization/combined under x-fal; minifal decodes no "
        "video, so endpoints enforce with VideoValidationConfig.check_video",
    ),
    _row(
        "ImageSizeConstraints",
        "fal.toolkit fal.toolkit.constraints",
        IMPLEMENTED,
        "satisfiable bounds checked at construction; enforced by ImageSizeField; check_size()",
    ),
    _row(
        "ImageValidationConfig",
        "fal.toolkit fal.toolkit.constraints",
        IMPLEMENTED,
        "bounds checked at construction; check_image() enforces them",
    ),
    _row(
        "VideoValidationConfig",
        "fal.toolkit fal.toolkit.constraints",
        IMPLEMENTED,
        "bounds checked at construction; check_video() enforces them",
    ),
    _row(
        "VideoNormalizationConfig",
        "fal.toolkit fal.toolkit.constraints",
        IMPLEMENTED,
        "what a model reshapes; published under x-fal.normalization",
    ),
    _row("ImageValidationOptions", "fal.toolkit fal.toolkit.constraints", IMPLEMENTED, "TypedDict"),
    _row("VideoValidationOptions", "fal.toolkit fal.toolkit.constraints", IMPLEMENTED, "TypedDict"),
    _row("to_xfal", "fal.toolkit fal.toolkit.constraints", IMPLEMENTED, "a config's x-fal payload"),
    _row(
        "FalBaseModel",
        "fal.toolkit fal.toolkit.pydantic",
        IMPLEMENTED,
        "FIELD_ORDERS, SCHEMA_IGNORES and Hidden give fal's JSON schema exactly",
    ),
    _row("Hidden", "fal.toolkit fal.toolkit.pydantic", IMPLEMENTED, "ui.hidden; needs a default"),
    _row("Field", "fal.toolkit fal.toolkit.pydantic", IMPLEMENTED, "pydantic's Field"),
    # -- fal.toolkit: downloads, compiled caches, kv, types, utils ------------------------------
    _row(
        "download_file",
        f"{TK} {DL}",
        IMPLEMENTED,
        "into the data dir, temp file then rename (workers racing see no half file)",
    ),
    _row(
        "download_model_weights",
        f"{TK} {DL}",
        IMPLEMENTED,
        "DATA_DIR/.fal/model_weights/<sha256(url)>/, downloaded once",
    ),
    _row(
        "clone_repository",
        f"{TK} {DL}",
        IMPLEMENTED,
        "DATA_DIR/.fal/repos, one shared checkout, renamed into place",
    ),
    _row("DownloadError", f"{TK} {DL}", IMPLEMENTED, "a URL could not be read (400)"),
    _row("FAL_PERSISTENT_DIR", f"{TK} {DL}", ACCEPTED, "the data dir (/data on fal)"),
    _row("FAL_MODEL_WEIGHTS_DIR", f"{TK} {DL}", ACCEPTED, "DATA_DIR/.fal/model_weights"),
    _row("FAL_REPOSITORY_DIR", f"{TK} {DL}", ACCEPTED, "DATA_DIR/.fal/repos"),
    _row("TEMP_HEADERS", DL, IMPLEMENTED, "fal's browser-like User-Agent"),
    _row(
        "patch_onnx_runtime",
        "fal.toolkit.utils fal.toolkit.utils.setup_utils",
        IMPLEMENTED,
        "ONNX Runtime thread settings (needs onnxruntime)",
    ),
    _row(
        "cancel_on_disconnect",
        "fal.toolkit.utils.endpoint",
        IMPLEMENTED,
        "cancels the block when the HTTP client disconnects",
    ),
    _row("retry", "fal.toolkit.utils.retry", IMPLEMENTED, "retry with back-off (sync or async)"),
    _row("BackoffType", "fal.toolkit.utils.retry", IMPLEMENTED, "exponential or fixed"),
    *(
        _row(name, SSRF, IMPLEMENTED, meaning)
        for name, meaning in (
            ("DEFAULT_ALLOWED_SCHEMES", "http, https"),
            ("DEFAULT_MAX_REDIRECT_HOPS", "5"),
            ("SSRFError", "a URL leads to a non-public address, or failed"),
            ("SSRFHTTPStatusError", "an HTTP error status"),
            ("SSRFConnectionError", "the connection failed"),
            ("SafeResponse", "status, headers, body"),
            ("is_globally_routable_ip", "public address check (IPv6 transition forms included)"),
            ("resolve_and_validate_host", "resolve; refuse unless every address is public"),
            ("merge_headers_for_pinned_request", "pinned headers win over the caller's"),
            ("ssrf_safe_get", "GET pinned to a checked public address, redirects checked"),
            ("ssrf_safe_get_headers", "the same, status and headers only"),
            ("ssrf_safe_get_to_file", "the same, into a file (atomically)"),
        )
    ),
    _row(
        "get_gpu_type",
        f"{TK} fal.toolkit.compilation",
        IMPLEMENTED,
        "the first GPU visible to this process, fal's one-word type",
    ),
    *(
        _row(name, f"{TK} fal.toolkit.compilation", IMPLEMENTED, meaning)
        for name, meaning in (
            ("load_inductor_cache", "shared compiled-kernel cache, without fal's gaps"),
            ("sync_inductor_cache", "publishes new kernels, merged, versioned, leased"),
            ("synchronized_inductor_cache", "one runner compiles, the others wait and load"),
        )
    ),
    _row(
        "LOCAL_INDUCTOR_CACHE_DIR",
        "fal.toolkit.compilation",
        ACCEPTED,
        "fal's per-host dir; informational: each minifal runner has a private dir",
    ),
    _row(
        "GLOBAL_INDUCTOR_CACHES_DIR",
        "fal.toolkit.compilation",
        ACCEPTED,
        "DATA_DIR/inductor-caches",
    ),
    _row("PERSISTENT_TMP_DIR", "fal.toolkit.compilation", ACCEPTED, "DATA_DIR/tmp"),
    _row(
        "KVStore",
        "fal.toolkit fal.toolkit.kv",
        ACCEPTED,
        "a real store on your machines: SQLite in DATA_DIR/kv.sqlite3 (shared by a host's "
        f"runners, WAL, bounded lock waits), or Redis when {envs.KV_REDIS_URL.name} is set; fal's "
        "rules (string values, ttl 60 s to 30 days, default 30 days)",
    ),
    _row("FAL_KV_HOST", "fal.toolkit.kv", ACCEPTED, "fal's service URL; unused here"),
    *(
        _row(name, "fal.toolkit.types", IMPLEMENTED, meaning)
        for name, meaning in (
            ("DataUri", "data: URI string, fal's pattern, cap and schema format"),
            ("HttpsUrl", "https URL string, fal's pattern, cap and schema format"),
            ("ImageDataUri", "DataUri with to_pil()"),
            ("ImageHttpsUrl", "HttpsUrl with to_pil()"),
            ("FileInput", "HttpsUrl or DataUri"),
            ("ImageInput", "ImageHttpsUrl or ImageDataUri"),
            ("DownloadFileMixin", "as_temp_file(): download for a with block"),
            ("DownloadImageMixin", "to_pil()"),
            ("MAX_DATA_URI_LENGTH", "10 MB"),
            ("MAX_HTTPS_URL_LENGTH", "2048"),
            ("HTTP_URL_REGEX", "fal's https URL pattern"),
        )
    ),
    # -- fal.toolkit: exceptions -----------------------------------------------------------------
    _row(
        "FalTookitException",
        "fal.toolkit fal.toolkit.exceptions",
        IMPLEMENTED,
        "base of the toolkit's errors (fal's spelling)",
    ),
    _row(
        "FileUploadException",
        "fal.toolkit fal.toolkit.exceptions",
        IMPLEMENTED,
        "a file could not be stored",
    ),
    _row(
        "FileUploadFallbackException",
        "fal.toolkit.exceptions",
        IMPLEMENTED,
        "the repository and every fallback failed",
    ),
    _row(
        "KVStoreException",
        "fal.toolkit fal.toolkit.exceptions",
        IMPLEMENTED,
        "a key-value store operation failed",
    ),
)

EXTRA_NAMES: tuple[Row, ...] = (
    _row(
        "_CUDA_OOM_MESSAGE",
        "fal.exceptions.gpu",
        IMPLEMENTED,
        'private in fal, imported by its tests: "CUDA error: out of memory"',
    ),
    _row(
        "_GPU_ERROR_STATUS_CODE",
        "fal.exceptions.gpu",
        IMPLEMENTED,
        "private in fal, imported by its tests: 503",
    ),
    _row(
        "File._from_url",
        FILE,
        IMPLEMENTED,
        "private in fal, used by its examples: a File known only by its URL",
    ),
    _row(
        "_hash_url",
        "fal.toolkit.utils.download_utils",
        IMPLEMENTED,
        "private in fal, used by its examples: sha256 of a URL, where its download goes",
    ),
)
"""Private names fal's own examples and tests use; checked like public ones."""
