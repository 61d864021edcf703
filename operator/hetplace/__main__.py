"""Entry point for `python -m hetplace`."""

from hetplace.cli import main

if __name__ == "__main__":
    main(prog_name="hetplace")
