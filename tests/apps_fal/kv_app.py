"""fal's key-value store page, as an app: values shared by every runner, and a result cache.

``/set``, ``/get`` and ``/delete`` work on one namespace; ``/`` caches an expensive result in
the store, as the page's example does, so that any runner answers a repeat from the cache.
"""

from __future__ import annotations

import hashlib
import json

import fal
from fal.toolkit.kv import KVStore
from pydantic import BaseModel, Field


class SetInput(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    value: str = Field(max_length=10_000)
    ttl: int | None = Field(default=None, ge=60, le=2_592_000, description="Seconds to keep")


class KeyInput(BaseModel):
    key: str = Field(min_length=1, max_length=200)


class ValueOutput(BaseModel):
    key: str
    value: str | None


class Input(BaseModel):
    id: str = Field(min_length=1, max_length=100, description="What to compute")
    rounds: int = Field(default=1000, ge=1, le=100_000)


class Output(BaseModel):
    digest: str
    cached: bool


class KVApp(fal.App, keep_alive=60):
    machine_type = "S"

    def setup(self) -> None:
        self.kv = KVStore("kv-app")

    @fal.endpoint("/set")
    def set_value(self, input: SetInput) -> ValueOutput:
        self.kv.set(input.key, input.value, ttl=input.ttl)
        return ValueOutput(key=input.key, value=input.value)

    @fal.endpoint("/get")
    def get_value(self, input: KeyInput) -> ValueOutput:
        return ValueOutput(key=input.key, value=self.kv.get(input.key))

    @fal.endpoint("/delete")
    def delete_value(self, input: KeyInput) -> ValueOutput:
        self.kv.delete(input.key)
        return ValueOutput(key=input.key, value=None)

    @fal.endpoint("/")
    def process(self, input: Input) -> Output:
        cache_key = f"result-{input.id}-{input.rounds}"
        cached = self.kv.get(cache_key)
        if cached:
            return Output(**json.loads(cached), cached=True)
        digest = input.id.encode()
        for _ in range(input.rounds):
            digest = hashlib.sha256(digest).digest()
        result = {"digest": digest.hex()}
        self.kv.set(cache_key, json.dumps(result))
        return Output(**result, cached=False)
