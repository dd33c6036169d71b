"""Write the small offline CLIP tokenizer shipped with the SD-Turbo configs.

The real SD-Turbo tokenizer (CLIP BPE, 49408 ids) is only downloadable from the hub. With random
weights any consistent BPE works, so this writes the smallest one ``CLIPTokenizer`` accepts: the
256 byte-level base symbols, their end-of-word (``</w>``) forms, no merges, and the two specials.
Ids match the start of the real CLIP vocabulary (base symbols 0-255, ``</w>`` forms 256-511) and the
specials keep their real ids 49406/49407, which are also the ``bos``/``eos`` defaults of
``CLIPTextConfig``; every id is below the text encoder's ``vocab_size`` of 49408.

Run from the repository root: ``python apps/sd_turbo_configs/make_tokenizer.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent
TOKENIZER_DIRS = (CONFIGS_DIR / "full" / "tokenizer", CONFIGS_DIR / "tiny" / "tokenizer")

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKEN_IDS = {START_OF_TEXT: 49406, END_OF_TEXT: 49407}
MODEL_MAX_LENGTH = 77


def byte_symbols() -> list[str]:
    """The printable character that byte-level BPE uses for each byte value, in CLIP's order.

    Printable Latin-1 bytes stand for themselves; the other bytes are mapped, in increasing
    order, to code points from 256 upwards so that every symbol is a visible character.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    unprintable = [b for b in range(256) if b not in printable]
    symbol_of = {b: chr(b) for b in printable}
    symbol_of.update({b: chr(256 + i) for i, b in enumerate(unprintable)})
    return [symbol_of[b] for b in (*printable, *unprintable)]


def build_vocab() -> dict[str, int]:
    symbols = byte_symbols()
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + i for i, symbol in enumerate(symbols)})
    vocab.update(SPECIAL_TOKEN_IDS)
    return vocab


def tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": START_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": "!",
        "do_lower_case": True,
    }


def write_tokenizer(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(
        json.dumps(build_vocab(), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), indent=2) + "\n", encoding="utf-8"
    )


def main() -> None:
    for directory in TOKENIZER_DIRS:
        write_tokenizer(directory)
        print(f"wrote {directory}")


if __name__ == "__main__":
    main()
