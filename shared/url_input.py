"""A user's URL, downloaded with a total deadline and a size cap, and Cog's file inputs held to the same.

`requests` bounds each read (its timeout), not the whole download: a server that sends one byte every few
seconds never trips it and holds the prediction slot for as long as it likes. `download()` checks a deadline
between reads that return as soon as any bytes arrive. Cog downloads a URL given for a `Path` input (`image`) itself, in the
worker, before `run()` (coglet 0.23.1 calls `cog.types.URLPath.convert`, which streams with a 10 s read
timeout and no deadline or cap); `limit_cog_file_inputs()` makes that call go through `download()` too.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from pathlib import Path

import requests
import urllib3

from .runtime import InputError, log_event
from .weight_download import shown  # URLs without credentials or a signed query


def download(url: str, dest: Path, *, field: str, max_bytes: int, deadline_s: float) -> int:
    """Stream `url` into `dest`; returns its size. Any failure is an InputError naming `field`."""
    deadline = time.monotonic() + deadline_s
    late = f"the download took longer than {deadline_s:.0f} s"
    too_large = f"the file is larger than {max_bytes // 2**20} MiB"
    try:
        # The read timeout bounds a silent server; `read1` returns whatever has arrived, so the deadline is
        # checked after every few bytes of a server that drips (iter_content would wait for a whole chunk).
        with requests.get(url, stream=True, timeout=(10, min(30.0, deadline_s))) as response:
            if response.status_code != 200:
                raise InputError(field, f"{shown(url)} answered HTTP {response.status_code}")
            if int(response.headers.get("Content-Length") or 0) > max_bytes:
                raise InputError(field, too_large)
            size = 0
            with open(dest, "wb") as out:
                while piece := response.raw.read1(2**16, decode_content=True):
                    size += len(piece)
                    if size > max_bytes:
                        raise InputError(field, too_large)
                    if time.monotonic() > deadline:
                        raise InputError(field, late)
                    out.write(piece)
            return size
    except InputError:
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        if time.monotonic() > deadline:
            raise InputError(field, late) from None
        raise InputError(field, f"could not download {shown(url)} ({e.__class__.__name__})") from None


# An image input: a 4096x4096 RGB PNG without compression is 48 MiB; a viewer-sized photo a few MiB.
FILE_INPUT_MAX_BYTES = int(os.environ.get("INPUT_DOWNLOAD_MAX_MB", "100")) * 2**20
FILE_INPUT_DEADLINE_S = float(os.environ.get("INPUT_DOWNLOAD_DEADLINE_S", "60"))


def limit_cog_file_inputs(runner_class) -> None:
    """Bound the downloads Cog makes for the URL inputs of `runner_class.run` (its `cog.Path` inputs)."""
    import cog
    from cog import types as cog_types

    fields = [name for name, p in inspect.signature(runner_class.run).parameters.items()
              if p.annotation in (cog.Path, "Path", "cog.Path")]
    if not fields:
        return
    field = fields[0] if len(fields) == 1 else "a file input"
    unbounded = getattr(cog_types.URLPath.convert, "unbounded", cog_types.URLPath.convert)
    max_bytes, deadline_s = FILE_INPUT_MAX_BYTES, FILE_INPUT_DEADLINE_S

    def convert(self):
        if not str(self.source).startswith(("http://", "https://")):
            return unbounded(self)  # a data URI: already in the request
        if self._path is None:
            fd, name = tempfile.mkstemp(suffix=self.filename)
            os.close(fd)
            try:
                download(self.source, Path(name), field=field, max_bytes=max_bytes, deadline_s=deadline_s)
            except BaseException:
                os.unlink(name)
                raise
            self._path = cog.Path(name)
        return self._path

    convert.unbounded = unbounded
    cog_types.URLPath.convert = convert
    log_event("url_input.limits", field=field, max_mb=max_bytes // 2**20, deadline_s=deadline_s)
