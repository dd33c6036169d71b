"""A plain JSON app whose answers say which revision served them: the revision tests copy it
and change ``REVISION`` (a new revision whose output differs) or ``SETUP_FAILS``."""

import os
import time

import fal
from pydantic import BaseModel, Field

REVISION = "v1"
SETUP_FAILS = False


class WorkInput(BaseModel):
    seconds: float = Field(default=0.0, ge=0, le=5)
    tag: str = ""


class WorkOutput(BaseModel):
    revision: str
    runner_id: str
    tag: str


class RevisionApp(fal.App):
    machine_type = "S"
    keep_alive = 300

    def setup(self) -> None:
        if SETUP_FAILS:
            raise RuntimeError("this revision's setup() fails")
        self.runner_id = os.environ.get("MINIFAL_RUNNER_ID", "unknown")

    @fal.endpoint("/")
    def work(self, input: WorkInput) -> WorkOutput:
        time.sleep(input.seconds)
        return WorkOutput(revision=REVISION, runner_id=self.runner_id, tag=input.tag)
