"""The same endpoint as a plain FastAPI app (``uvicorn echo_fastapi:app``)."""

from fastapi import FastAPI
from pydantic import BaseModel


class Input(BaseModel):
    text: str


class Output(BaseModel):
    text: str


app = FastAPI()


@app.post("/")
def echo(input: Input) -> Output:
    return Output(text=input.text)
