"""``python -m provmint``."""

from provmint.cli import main

if __name__ == "__main__":
    main()
