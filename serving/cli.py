"""`lir-serve`: starts Triton on a model repository (coming with the serving issue)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lir-serve", description="Serve a model repository with Triton.")
    parser.parse_args(argv)
    print("lir-serve: not yet: Triton serving arrives with the serving issue", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
