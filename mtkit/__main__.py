"""`python -m mtkit` runs the command-line interface (also what torchrun launches)."""

from mtkit.cli import main

if __name__ == "__main__":
    main()
