"""A flash that can be made full, for the charge point runner (`flash_module="fullflash"`).

While a file named `flash_full` exists in the working directory, every write through
storage.Flash fails the way a full littlefs fails on a board: the file opens, `write`
raises OSError(ENOSPC) (storage turns that into FlashFull and discards the temporary file).
Reads, renames and removals work. Runs on CPython and on MicroPython."""

import os

import storage

_open = open


def _full():
    try:
        os.stat("flash_full")
        return True
    except OSError:
        return False


class _FullFile:
    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        raise OSError(storage.ENOSPC)

    def close(self):
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _open_full(path, mode="r", *args):
    fh = _open(path, mode, *args)
    if ("w" in mode or "a" in mode) and _full():
        return _FullFile(fh)
    return fh


storage.open = _open_full  # storage's `open` (a module global shadows the builtin)
Flash = storage.Flash
