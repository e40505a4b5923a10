"""
The ground floor: what every other module may import, importing nothing of this project itself.

- UserError: a user's mistake (bad input, a missing file, a full disk). Raised where the mistake
  is found; configurator.run_cli prints it as one `error: ...` line and exits 2. Any other
  exception is a bug and keeps its traceback.
- The one atomic write (atomic_path, atomic_write, save_json): a crash leaves the old file or the
  new one, never half of one.
"""

import contextlib
import json
import os

# the repo's data/
DATA_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class UserError(ValueError):
    """A user mistake (bad input, a missing file, a full disk); the message says what to do next."""


def checked(fn, *args, **kwargs):
    """fn(*args, **kwargs) on values the user gave, its ValueError raised again as a UserError. For
    model.py's and recurrent.py's own checks (GPTConfig, the sampling settings), which raise plain
    ValueError: they import nothing of this package."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path to write; on success fsync it and rename it over path, so no reader sees
    half a file. The temp file sits in the same directory (a rename is atomic only within one file
    system) and is removed on failure."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, write):
    """write(tmp_path), then atomic_path's fsync and rename: a crash leaves either the old file or
    the new one."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_figure(fig, path, dpi=100, **savefig_kwargs):
    """A matplotlib Figure written as a PNG, atomically, its directory created. Figures are built
    with matplotlib.figure.Figure, not pyplot: no global figure state and no GUI backend."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, **savefig_kwargs))


def save_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    atomic_write(path, write)
