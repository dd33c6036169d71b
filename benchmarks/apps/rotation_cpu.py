"""Four tiny apps that each want one GPU, for ``benchmarks/app_rotation.py --cpu``: the
shared pool's arbiter takes the GPU from one app for another as on a GPU machine, here with
real processes and a pretend GPU (``minifal run ... --gpus 0`` on a machine without one: the
pool hands GPU "0" out, the runner's ``CUDA_VISIBLE_DEVICES`` is set, and nothing uses it).

Each answers with its app's name and its process id, so a caller sees which app answered and
whether its runner was started afresh. ``setup()`` imports the modules named in
``$ROTATION_IMPORTS`` (none by default) and sleeps ``$ROTATION_SETUP_SECONDS`` (default 0.5 s),
standing in for a model's libraries and its loading.
"""

import importlib
import os
import time

import fal
from pydantic import BaseModel


class Query(BaseModel):
    n: int = 0


class Answer(BaseModel):
    app: str
    pid: int
    n: int


class RotationApp(fal.App):
    machine_type = "GPU-H100"  # one GPU a runner: the pool arbitrates it
    min_concurrency = 0
    max_concurrency = 1
    keep_alive = 300

    def setup(self) -> None:
        for name in os.environ.get("ROTATION_IMPORTS", "").split():
            importlib.import_module(name)
        time.sleep(float(os.environ.get("ROTATION_SETUP_SECONDS", "0.5")))

    @fal.endpoint("/")
    def answer(self, query: Query) -> Answer:
        return Answer(app=type(self).resolved_app_name(), pid=os.getpid(), n=query.n)


class RotationA(RotationApp):
    app_name = "rotation-a"


class RotationB(RotationApp):
    app_name = "rotation-b"


class RotationC(RotationApp):
    app_name = "rotation-c"


class RotationD(RotationApp):
    app_name = "rotation-d"
