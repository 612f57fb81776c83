"""Files other processes read: content hashes and directories that appear whole or not at all."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_directory(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; on success it becomes ``target``.

    Readers never see half a directory: it is written under a hidden name and
    renamed into place. On an error the temporary directory is removed and
    ``target`` is untouched. ``replace=False``: an existing ``target`` (a
    concurrent writer won, or it was published before) is kept and the new copy
    discarded; ``replace=True``: the old ``target`` is swapped out, then removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if not target.exists():
            try:
                tmp.rename(target)
                return
            except OSError:  # a concurrent writer created it meanwhile
                if not replace:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                raise
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
