"""The watchdog of a local Triton server (`python -m lir.serving.watchdog WORKDIR`).

`TritonServer.start` runs it beside tritonserver with a pipe on its stdin. The pipe reaches its end when
the server's owner exits in any way, kill -9 included; the watchdog then kills tritonserver and its
stubs (the processes that run from the work folder) and removes their shared memory and the work folder
(`clean_up`). A clean `stop()` does that itself and kills the watchdog.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lir.serving.server import clean_up


def main(argv: list[str]) -> None:
    """Wait for the owner to exit, then clean up after its server."""
    sys.stdin.buffer.read()  # returns when the owner has exited: nothing else writes or closes the pipe
    clean_up(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
