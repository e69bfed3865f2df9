"""How the reader talks to storage (local, s3://, gs://, http(s):// through fsspec): the
options, redaction of credentials, which errors are transient, the one retry policy and the
one HTTP GET. The readers built on them are in ranges.py.

Every request has our timeouts (`fs_kwargs`), and the client libraries' own retries are
turned off: faults reach `retry`, which counts them in the caller's stats, waits with
jittered exponential backoff (`StorageOptions`), and tries again; a fault that is not
transient (missing, forbidden), or one that outlasts the retries, is a ShardReadError
naming the URL, redacted. Our own verdicts (a `ReaderError`: a server that ignores Range, a
damaged sample) are never retried: they pass through as they are; so does anything that is
not a storage fault (a KeyError, a TypeError: a bug), never taken for a sample to skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import logging
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from .errors import ReaderError, ShardNotFound, ShardReadError

__all__ = ["StorageOptions", "redact", "retry", "http_get", "is_transient", "filesystem"]

log = logging.getLogger("vidshard.remote")
_jitter = random.SystemRandom()  # not seeded: workers that failed together must not retry together
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageOptions:
    retries: int = 5  # attempts after the first, per block
    backoff_s: float = 0.2  # first wait; doubles per retry, at most max_backoff_s; each wait drawn from [w/2, w]
    max_backoff_s: float = 5.0
    timeout_s: float = 30.0  # connect and read timeout of every request: no read hangs past it
    block_bytes: int = 4 * 2**20  # bytes per ranged request
    fs_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra fsspec options per protocol


# sig/token/key only as URL parameters: a SampleError's "[shard=..., key=<sample key>]" is no secret.
# A bare `key=` is a sample key in our typed errors (kept); as a URL parameter, or with a
# prefix (secret_key=, access_key=, api-key=), it is a secret, as are tokens and passwords.
_SECRETS = re.compile(r"((?:X-Amz-[A-Za-z-]+|Signature|AWSAccessKeyId|Credential|Expires|sig|(?<=[?&;])key|"
                      r"[A-Za-z]+[_-]?key|[A-Za-z_-]*(?:token|password|passwd|secret))=)[^&;\s'\"]+", re.I)
_USERINFO = re.compile(r"(//)[^/@\s]+@")


def redact(text: str) -> str:
    """Strip credentials from URLs and messages: user:password@ and signed-URL parameters."""
    return _SECRETS.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def fs_kwargs(protocol: str, options: StorageOptions) -> dict[str, Any]:
    """fsspec options giving every request our timeouts; we retry ourselves, so clients don't."""
    t = options.timeout_s
    if protocol == "s3":
        # Endpoint and credentials: the standard AWS settings (AWS_ENDPOINT_URL, env, profile).
        # total_max_attempts 1: botocore's own retries off (its max_attempts counts retries
        # after the first attempt, so max_attempts 1 would retry a reset once, unseen).
        kwargs: dict[str, Any] = {"config_kwargs": {"connect_timeout": t, "read_timeout": t,
                                                    "retries": {"total_max_attempts": 1}}}
    elif protocol in ("http", "https", "gs", "gcs"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)
        if protocol in ("http", "https"):
            kwargs = {"client_kwargs": {"timeout": timeout}}
        else:
            # gcsfs passes requests_timeout to every request (None there would mean no
            # timeout, overriding the session's); the session gets it too for good measure.
            kwargs = {"requests_timeout": timeout, "session_kwargs": {"timeout": timeout}}
    else:
        kwargs = {}
    kwargs.update(options.fs_options.get(protocol, {}))
    return kwargs


def filesystem(url: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URL, with our timeouts."""
    protocol = protocol_of(url)
    fs, path = fsspec.core.url_to_fs(url, **fs_kwargs(protocol, options))
    if protocol == "s3":
        fs.retries = 1  # s3fs's own count of attempts: one, so faults reach our loop and counters
    return fs, path


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a client library's error, by the library's own exception types."""
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientResponseError):
        return exc.status
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, botocore.ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    gcsfs = sys.modules.get("gcsfs.retry")
    if gcsfs is not None and isinstance(exc, gcsfs.HttpError) and isinstance(exc.code, int):
        return exc.code
    return None


def _cut_or_timed_out() -> list[type[BaseException]]:
    """A reset, a timeout, a body cut short (http.client's IncompleteRead is no OSError; older
    botocore lets urllib3's ProtocolError through): storage faults, and worth retrying."""
    types: list[type[BaseException]] = [OSError, EOFError, asyncio.TimeoutError, TimeoutError, http.client.HTTPException]
    urllib3 = sys.modules.get("urllib3.exceptions")
    if urllib3 is not None:
        types.append(urllib3.HTTPError)
    return types


def _transient_types() -> tuple[type[BaseException], ...]:
    """Connection, timeout and cut-body errors of the client libraries that are loaded
    (an error from a library means the library is imported)."""
    types = _cut_or_timed_out()
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        types += [botocore.HTTPClientError, botocore.ConnectionError, botocore.IncompleteReadError]
    return tuple(types)


def _storage_types() -> tuple[type[BaseException], ...]:
    """What a storage fault can be: an OSError (fsspec's FileNotFoundError and PermissionError
    included), a cut body, a timeout, or an error of a client library that is loaded. Anything
    else out of an attempt (a KeyError, a TypeError) is a bug, not the storage's: `retry`
    raises it unchanged."""
    types = _cut_or_timed_out()
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        types.append(aiohttp.ClientError)
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        types += [botocore.BotoCoreError, botocore.ClientError]
    gcsfs = sys.modules.get("gcsfs.retry")
    if gcsfs is not None:
        types.append(gcsfs.HttpError)
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: resets, timeouts, 5xx/408/429, cut bodies. Not: missing, forbidden."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ReaderError)):
        return False
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    return isinstance(exc, _transient_types())


def retry(attempt: Callable[[], T], doing: str, url: str, options: StorageOptions, stats: Counter) -> T:
    """`attempt()`, again after each transient fault, up to `options.retries` times; `doing`
    says what it does in the error ("reading bytes [0, 100)"). An attempt that keeps state
    (bytes already delivered) goes on from it: the retry only calls it again."""
    wait = options.backoff_s
    for n in range(1, options.retries + 2):
        try:
            return attempt()
        except ReaderError:
            raise  # our own verdict (a server that ignores Range): not a fault to retry or rename
        except Exception as exc:  # noqa: BLE001 (classified: permanent errors are raised at once)
            if not isinstance(exc, _storage_types()):
                raise  # a bug in the attempt (KeyError, TypeError): not a fault of the storage, nor a sample to skip
            if not is_transient(exc) or n > options.retries:
                stats["failed_reads"] += 1
                if isinstance(exc, FileNotFoundError):
                    raise ShardNotFound(f"{doing} not found", shard=redact(url)) from None
                raise ShardReadError(f"{doing} failed after {n} attempt(s): {type(exc).__name__}: {redact(str(exc))[:300]}",
                                     shard=redact(url)) from None
            stats["retries"] += 1
            log.info("retrying %s (%s) after %s", redact(url), doing, type(exc).__name__)
            time.sleep(wait * _jitter.uniform(0.5, 1.0))
            wait = min(wait * 2, options.max_backoff_s)
    raise AssertionError("unreachable")


async def http_get(fs, path: str, shown: str, headers: dict[str, str] | None = None):
    """The response to one GET through fsspec's HTTP session (its timeouts and headers), open:
    the caller closes it (`async with`, or `close()` to drop the connection). A missing file
    is FileNotFoundError naming `shown` (the redacted URL), other errors the client's own;
    416 (a Range past the end) is returned: the caller sees an empty body."""
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = {**(kwargs.pop("headers", None) or {}), **(headers or {})}
    response = await session.get(fs.encode_url(path), headers=headers, **kwargs)
    try:
        if response.status == 404:
            raise FileNotFoundError(shown)
        if response.status != 416:
            response.raise_for_status()
    except Exception:
        response.close()
        raise
    return response
