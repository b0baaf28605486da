"""User-facing errors and the wrapper that turns them into one clear line and exit status 2."""

from __future__ import annotations

import functools
import gc
import os
import sys
import traceback
from typing import Callable


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value). The message says what and how to fix it."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI `main(argv)`: bad input -> `error: ...` and 2; Ctrl-C -> 130; a bug -> one line and 1.

    Set EXMED_DEBUG=1 to see the traceback of an internal error.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
            return 0 if rc is None else int(rc)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `script | head` closed our stdout: stop quietly, as Unix tools do
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except SystemExit as e:  # argparse exits 2 on bad flags, after printing its own line
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except MemoryError:
            print("error: out of memory; reduce --batch-size or --max-length", file=sys.stderr)
            return 1
        except Exception as e:  # noqa: BLE001 - a bug, not bad input: keep it to one line unless asked
            if os.environ.get("EXMED_DEBUG"):
                traceback.print_exc()
            else:
                print(f"internal error: {type(e).__name__}: {e} "
                      "(set EXMED_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
            return 1

    return wrapper


def run(main: Callable[..., int]) -> None:
    """Script entry: `run(main)` exits the process with main's status. What the stage left in memory is
    frozen out of the garbage collector first, so the interpreter's last collection at exit does not
    walk all of it (20 ms after a conversion of 100,000 patients)."""
    rc = main()
    gc.freeze()
    sys.exit(rc)
