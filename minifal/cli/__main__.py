"""``python -m minifal.cli``: the ``minifal`` command."""

from minifal.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
