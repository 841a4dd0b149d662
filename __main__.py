"""``python -m sx``: the ``sx-worker`` command (the repository root is the ``sx`` namespace)."""

from sx.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main(prog_name="python -m sx")
