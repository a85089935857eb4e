"""Verified downloads of the raw data: OpenNeuro over HTTPS, the HCP from its S3 bucket.

Every file is checked against a known size and checksum before it is given its final name.
Data stream into a temporary file in the destination folder, are hashed while written, and
are renamed only once verified, so a killed job or a corrupt transfer never leaves a file
that looks finished. A destination that already verifies is kept without any network
request.

OpenNeuro checksums come from the dataset's git-annex keys (the file name of the annexed
content holds its size and MD5 or SHA-256), read from the dataset's GitHub mirror at a
snapshot tag. HCP checksums come from the S3 ETag, which is the MD5 of an object uploaded
in one part.

Only the standard library is used, except boto3 for S3, imported when first needed.
"""

import contextlib
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ._files import temporary_beside

__all__ = [
    "DownloadError",
    "parse_annex_key",
    "openneuro_url",
    "annex_key_url",
    "resolve_checksum",
    "file_digests",
    "verify_file",
    "fetch",
    "fetch_s3",
]

_LOG = logging.getLogger(__name__)
_CHUNK = 1 << 20  # bytes read and hashed at a time (1 MiB)
_PROGRESS_S = 10.0  # seconds between progress lines of a long transfer
# A symlink target or annex pointer is one short line; anything longer is file content.
# Small files kept in git (sidecars, gradient tables) are served whole by the mirror.
_MAX_GIT_FILE = 16 * 1024 * 1024
_MAX_KEY_TEXT = 4096
_ANNEX_KEY = re.compile(
    # Backend, size field, optional chunk/mtime fields, then the digest; the "E" backends
    # append the file's extension, which is not part of the digest.
    r"(?P<backend>MD5E?|SHA256E?)-s(?P<size>\d+)(?:-[SCm]\d+)*--(?P<digest>[0-9a-fA-F]+)"
)
_DIGEST_LENGTH = {"md5": 32, "sha256": 64}
_DATASET_ID = re.compile(r"ds\d{6}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class DownloadError(RuntimeError):
    """A file could not be downloaded, or what arrived is not the expected file."""


class _Retry(Exception):
    """A failure worth another attempt; its message is the error if no attempt succeeds."""


def parse_annex_key(text):
    """Size and checksum held in a git-annex key.

    Parameters
    ----------
    text : str
        A key such as ``MD5E-s14600123--0b18...acbc.nii.gz``, or text holding one (the
        target of an annexed file's symlink, an annex pointer file).

    Returns
    -------
    dict
        ``{"size": bytes, "md5": hex}`` or ``{"size": bytes, "sha256": hex}``, hex in
        lower case.

    Raises
    ------
    ValueError
        Naming the text when it holds no MD5 or SHA-256 key.
    """
    for match in _ANNEX_KEY.finditer(text):
        algorithm = match["backend"].rstrip("E").lower()
        digest = match["digest"].lower()
        if len(digest) == _DIGEST_LENGTH[algorithm]:
            return {"size": int(match["size"]), algorithm: digest}
    raise ValueError(f"{text[:200]!r}: not a git-annex MD5 or SHA-256 key")


def _check_relative(path):
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or "\\" in path or ".." in parts:
        raise ValueError(f"{path!r}: expected a relative path inside the dataset, without '..'")
    return urllib.parse.quote(path, safe="/")


def _check_dataset_id(dataset_id):
    if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id):
        raise ValueError(f"{dataset_id!r}: not an OpenNeuro dataset id ('ds' and 6 digits)")


def openneuro_url(dataset_id, path, *, base_url="https://s3.amazonaws.com/openneuro.org"):
    """URL of the latest version of a file in OpenNeuro's public S3 bucket.

    Parameters
    ----------
    dataset_id : str
        Accession number such as ``"ds000001"``.
    path : str
        File path relative to the dataset root, e.g. ``"sub-01/anat/sub-01_T1w.nii.gz"``.
    base_url : str, optional
        Bucket address (a local server in tests).

    Raises
    ------
    ValueError
        When the id is malformed or the path is absolute or climbs out with ``..``.
    """
    _check_dataset_id(dataset_id)
    return f"{base_url.rstrip('/')}/{dataset_id}/{_check_relative(path)}"


def annex_key_url(dataset_id, version, path, *,
                  base_url="https://raw.githubusercontent.com/OpenNeuroDatasets"):
    """URL of a file in the dataset's GitHub mirror at snapshot tag ``version``.

    For an annexed file the content served there is its symlink target, which ends with
    the git-annex key (size and checksum) of that snapshot's version of the file.

    Raises
    ------
    ValueError
        When the id, version tag or path is malformed.
    """
    _check_dataset_id(dataset_id)
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"{version!r}: not a snapshot tag such as '1.0.0'")
    return f"{base_url.rstrip('/')}/{dataset_id}/{version}/{_check_relative(path)}"


def resolve_checksum(dataset_id, version, path, *,
                     base_url="https://raw.githubusercontent.com/OpenNeuroDatasets",
                     retries=3, backoff_s=1.0, timeout_s=60):
    """Size and checksum of an OpenNeuro file at a snapshot, from its git-annex key.

    Parameters
    ----------
    dataset_id, version, path : str
        As for `annex_key_url`.
    base_url : str, optional
        Address of the GitHub mirror (a local server in tests).
    retries : int, optional
        Further attempts after a connection error, timeout or HTTP 5xx.
    backoff_s : float, optional
        Wait before the first retry (s), doubled for each further one.
    timeout_s : float, optional
        Socket timeout (s).

    Returns
    -------
    dict
        As `parse_annex_key`: ``{"size": bytes, "md5" or "sha256": hex}``. Small files that
        the dataset keeps in git (JSON sidecars, ``.bval``/``.bvec``) have no annex key: the
        mirror serves their content at the snapshot, whose size and SHA-256 are returned.

    Raises
    ------
    DownloadError
        Naming the path when it is not found at that snapshot, or is larger than
        ``_MAX_GIT_FILE`` bytes without being annexed.
    """
    url = annex_key_url(dataset_id, version, path, base_url=base_url)
    where = f"{dataset_id} {version} {path} ({url})"

    def attempt():
        with _open(url, timeout_s, what=where) as response:
            return response.read(_MAX_GIT_FILE + 1)

    content = _with_retries(attempt, retries=retries, backoff_s=backoff_s, log=_LOG)
    if len(content) > _MAX_GIT_FILE:
        raise DownloadError(
            f"{where}: more than {_MAX_GIT_FILE} bytes and not an annexed file, so no "
            "checksum can be resolved; give the checksum in the configuration"
        )
    text = content.decode("utf-8", errors="replace").strip()
    if len(content) <= _MAX_KEY_TEXT and "\n" not in text:
        try:
            return parse_annex_key(text)
        except ValueError:
            pass
    return {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def _expected(size, md5, sha256):
    """The given expectations, digests checked and in lower case."""
    expected = {} if size is None else {"size": int(size)}
    for algorithm, digest in (("md5", md5), ("sha256", sha256)):
        if digest is None:
            continue
        digest = str(digest).lower()
        if not re.fullmatch(f"[0-9a-f]{{{_DIGEST_LENGTH[algorithm]}}}", digest):
            raise ValueError(f"{digest!r}: not an {algorithm} hex digest")
        expected[algorithm] = digest
    return expected


def _mismatches(expected, measured):
    """Descriptions of every expected value that the measured ones contradict."""
    problems = []
    if "size" in expected and expected["size"] != measured["size"]:
        problems.append(f"size mismatch (expected {expected['size']} bytes, "
                        f"got {measured['size']})")
    for algorithm in ("md5", "sha256"):
        if algorithm in expected and expected[algorithm] != measured[algorithm]:
            problems.append(f"checksum mismatch ({algorithm} expected {expected[algorithm]}, "
                            f"got {measured[algorithm]})")
    return problems


def file_digests(path, algorithms=("sha256",)):
    """Size and hex digests of a file, read once in chunks.

    Parameters
    ----------
    path : str or Path
    algorithms : sequence of str, optional
        :mod:`hashlib` names, e.g. ``"md5"``, ``"sha256"``.

    Returns
    -------
    dict
        ``"size"`` (bytes) and one hex digest per algorithm.
    """
    with open(path, "rb") as handle:
        return _copy(handle, None, algorithms)


def verify_file(path, *, size=None, md5=None, sha256=None):
    """Check a file's size (bytes) and checksums.

    Parameters
    ----------
    path : str or Path
    size : int, optional
        Expected size in bytes.
    md5, sha256 : str, optional
        Expected hex digests.

    Returns
    -------
    dict
        The measured ``"size"`` and each requested digest.

    Raises
    ------
    DownloadError
        Naming the file, the expected and the actual values, when they differ, or when the
        file cannot be read.
    """
    expected = _expected(size, md5, sha256)
    try:
        measured = file_digests(path, [name for name in ("md5", "sha256") if name in expected])
    except OSError as error:
        raise DownloadError(f"{path}: cannot read ({error})") from error
    problems = _mismatches(expected, measured)
    if problems:
        raise DownloadError(f"{path}: {'; '.join(problems)}")
    return measured


def _with_retries(attempt, *, retries, backoff_s, log):
    """Call ``attempt`` until it succeeds, at most ``1 + retries`` times."""
    for number in range(retries + 1):
        try:
            return attempt()
        except _Retry as error:
            if number == retries:
                suffix = f" (after {retries + 1} attempts)" if retries else ""
                raise DownloadError(f"{error}{suffix}") from error.__cause__
            delay = backoff_s * 2 ** number
            log.warning("%s; retrying in %.1f s", error, delay)
            time.sleep(delay)


def _open(url, timeout_s, *, what):
    """Open ``url``, sorting failures into ones worth retrying and final ones."""
    from noise2average import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"noise2average/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        # 429 (rate limited) and 5xx are the server's passing trouble; other codes are final.
        if error.code >= 500 or error.code == 429:
            raise _Retry(f"{what}: server error (HTTP {error.code} {error.reason})") from error
        if error.code in (403, 404, 410):
            # S3 answers 403 rather than 404 for a missing key in a bucket that cannot be listed.
            raise DownloadError(f"{what}: not found on the server (HTTP {error.code})") from None
        raise DownloadError(
            f"{what}: refused by the server (HTTP {error.code} {error.reason})"
        ) from None
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
        raise _Retry(f"{what}: connection failed ({getattr(error, 'reason', error)})") from error


def _temporary(destination):
    handle, tmp = temporary_beside(destination, ".part")
    os.close(handle)
    return tmp


def _copy(stream, sink, algorithms, *, label=None, log=None):
    """Read ``stream`` to its end, hashing, into ``sink`` (a binary file or None).

    Returns the size (bytes) and the hex digests; reports progress to ``log`` if given.
    """
    digests = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    size = 0
    start = last_report = time.monotonic()
    while chunk := stream.read(_CHUNK):
        if sink is not None:
            sink.write(chunk)
        size += len(chunk)
        for digest in digests.values():
            digest.update(chunk)
        now = time.monotonic()
        if log is not None and now - last_report >= _PROGRESS_S:
            log.info("%s: %.1f MB so far (%.1f MB/s)", label, size / 1e6,
                     size / 1e6 / max(now - start, 1e-9))
            last_report = now
    return {"size": size, **{name: digest.hexdigest() for name, digest in digests.items()}}


def _transfer(open_stream, destination, expected, algorithms, *, transient, label, retries,
              backoff_s, log):
    """Download to a temporary file, verify, and rename; nothing else is ever left.

    ``open_stream()`` returns a readable stream and the length the server announced (bytes,
    or None); ``transient(error)`` tells whether a failure while reading is worth a retry.
    """

    def attempt():
        tmp = _temporary(destination)
        try:
            start = time.monotonic()
            stream, announced = open_stream()
            with contextlib.closing(stream), open(tmp, "wb") as sink:
                try:
                    measured = _copy(stream, sink, algorithms, label=label, log=log)
                except Exception as error:
                    if not transient(error):
                        raise
                    raise _Retry(f"{label}: transfer interrupted ({error})") from error
            seconds = time.monotonic() - start
            problems = _mismatches(expected, measured)
            if announced is not None and announced != measured["size"]:
                problems.insert(0, f"transfer incomplete ({measured['size']} of {announced} bytes)")
            if problems:
                raise _Retry(f"{label} -> {destination}: {'; '.join(problems)}")
            os.replace(tmp, destination)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("%s: %d bytes in %.1f s (%.1f MB/s)", label, measured["size"], seconds,
                 measured["size"] / 1e6 / max(seconds, 1e-9))
        return {**measured, "seconds": seconds}

    return _with_retries(attempt, retries=retries, backoff_s=backoff_s, log=log)


def _existing(destination, expected, algorithms, *, log):
    """Measured values of a destination that verifies; a stale one is removed."""
    if not destination.is_file():
        return None
    measured = file_digests(destination, algorithms)
    problems = _mismatches(expected, measured)
    if not problems:
        return measured
    # A file failing verification must never stay where the workflow takes it as finished.
    log.warning("%s: %s; removing it and downloading again", destination, "; ".join(problems))
    destination.unlink()
    return None


def fetch(url, destination, *, size=None, md5=None, sha256=None, allow_unverified=False,
          retries=3, backoff_s=1.0, timeout_s=60, log=None):
    """Download ``url`` to ``destination`` and verify it, unless a verified copy is there.

    Parameters
    ----------
    url : str
        HTTP(S) address.
    destination : str or Path
        Final file; missing folders are created.
    size : int, optional
        Expected size in bytes.
    md5, sha256 : str, optional
        Expected hex digests; at least one is required unless ``allow_unverified``.
    allow_unverified : bool, optional
        Accept a file without a checksum to compare (its SHA-256 is still reported).
    retries : int, optional
        Further attempts after a connection error, timeout, HTTP 5xx or 429, an incomplete
        transfer or a size or checksum mismatch. HTTP 403/404 are final at once.
    backoff_s : float, optional
        Wait before the first retry (s), doubled for each further one.
    timeout_s : float, optional
        Socket timeout (s) for connecting and for each read.
    log : logging.Logger, optional
        Receives progress lines (bytes, MB/s); the module's logger by default.

    Returns
    -------
    dict
        ``url``, ``destination``, ``downloaded`` (False when a verified copy was kept),
        ``size`` (bytes), the digests checked (``md5`` and/or ``sha256``) and ``seconds``
        spent transferring.

    Raises
    ------
    DownloadError
        Naming the URL: not found (HTTP 403/404), other HTTP errors, failure after all
        retries, or a size or checksum mismatch (with expected and actual values). No file
        is left at ``destination`` nor beside it when it fails.
    ValueError
        When no checksum is given without ``allow_unverified``, or a digest is malformed.
    """
    log = log or _LOG
    destination = Path(destination)
    expected = _expected(size, md5, sha256)
    algorithms = [name for name in ("md5", "sha256") if name in expected]
    if not algorithms:
        if not allow_unverified:
            raise ValueError(f"{url}: no md5 or sha256 to verify the download against "
                             f"(pass allow_unverified=True to accept it unchecked)")
        algorithms = ["sha256"]
    result = {"url": url, "destination": str(destination)}
    measured = _existing(destination, expected, algorithms, log=log)
    if measured is not None:
        log.info("%s: already present and verified", destination)
        return {**result, "downloaded": False, **measured, "seconds": 0.0}

    def open_stream():
        response = _open(url, timeout_s, what=url)
        # Compared with what arrives: urllib reports a connection closed early as a short read.
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None

    log.info("%s -> %s", url, destination)
    measured = _transfer(
        open_stream, destination, expected, algorithms,
        transient=lambda error: isinstance(error, (OSError, http.client.HTTPException)),
        label=url, retries=retries, backoff_s=backoff_s, log=log,
    )
    return {**result, "downloaded": True, **measured}


def _s3_client():
    """A boto3 S3 client given only the credentials in the environment."""
    try:
        import boto3
    except ImportError:
        raise DownloadError(
            "HCP downloads need boto3: pip install 'noise2average[download]'"
        ) from None
    # Passed explicitly so that no other credential source (~/.aws, instance roles) is used.
    return boto3.client(
        "s3",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )


def _s3_transient(error):
    """Whether an error of the S3 client (no server answer) is worth a retry."""
    # botocore and urllib3 exceptions are tested by module so that neither is imported here.
    module = type(error).__module__
    return isinstance(error, OSError) or module.startswith(("botocore", "urllib3"))


def _s3_call(call, label, **arguments):
    """Call a client method, sorting failures into ones worth retrying and final ones."""
    try:
        return call(**arguments)
    except Exception as error:
        response = getattr(error, "response", None)
        if not isinstance(response, dict):
            if not _s3_transient(error):
                raise
            raise _Retry(f"{label}: request failed ({type(error).__name__}: {error})") from error
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = response.get("Error", {}).get("Code", "")
        if status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
            raise _Retry(f"{label}: server error ({code or status})") from error
        if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
            raise DownloadError(f"{label}: not found on the server (HTTP 404)") from None
        if status == 403 or code in ("403", "AccessDenied", "Forbidden"):
            raise DownloadError(
                f"{label}: access denied (HTTP 403); check that AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY hold valid HCP credentials"
            ) from None
        raise DownloadError(f"{label}: refused by the server ({code or status})") from None


def fetch_s3(bucket, key, destination, *, size=None, md5=None, allow_unverified=False,
             client=None, retries=3, backoff_s=1.0, log=None):
    """Download an S3 object (the HCP's ``hcp-openaccess`` bucket) and verify it.

    The object's ETag is its MD5 when it was uploaded in one part (no ``-`` in it); that
    MD5 is checked along with any ``md5`` and ``size`` given. Credentials are read only
    from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and the optional
    ``AWS_SESSION_TOKEN``, and never appear in messages or results.

    Parameters
    ----------
    bucket, key : str
        Object location, e.g. ``"hcp-openaccess"``, ``"HCP_1200/100307/T1w/T1w_acpc_dc.nii.gz"``.
    destination : str or Path
        Final file; missing folders are created.
    size : int, optional
        Expected size in bytes.
    md5 : str, optional
        Expected hex MD5; required when the ETag is not an MD5 (a multipart upload),
        unless ``allow_unverified``.
    allow_unverified : bool, optional
        Accept an object with neither ``md5`` nor an MD5 ETag, checking its size only.
    client : object, optional
        An S3 client (``head_object``, ``get_object``); by default a boto3 client made
        with the environment's credentials.
    retries : int, optional
        Further attempts after a connection or server error or a size or checksum mismatch.
    backoff_s : float, optional
        Wait before the first retry (s), doubled for each further one.
    log : logging.Logger, optional
        Receives progress lines (bytes, MB/s); the module's logger by default.

    Returns
    -------
    dict
        ``url`` (``s3://bucket/key``), ``destination``, ``downloaded``, ``size`` (bytes),
        ``md5`` and ``seconds``.

    Raises
    ------
    DownloadError
        When credentials are missing (naming the variables), boto3 is not installed, the
        object is missing or access is denied, the given values contradict the object's,
        or the transfer fails or does not verify. No file is left behind on failure.
    """
    log = log or _LOG
    destination = Path(destination)
    label = f"s3://{bucket}/{key}"
    expected = _expected(size, md5, None)
    result = {"url": label, "destination": str(destination)}
    if "md5" in expected:
        measured = _existing(destination, expected, ["md5"], log=log)
        if measured is not None:
            log.info("%s: already present and verified", destination)
            return {**result, "downloaded": False, **measured, "seconds": 0.0}
    if client is None:
        missing = [name for name in _CREDENTIALS if not os.environ.get(name)]
        if missing:
            raise DownloadError(
                f"{label}: HCP downloads need credentials in the environment variables "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({' and '.join(missing)} not set)"
            )
        client = _s3_client()

    head = _with_retries(lambda: _s3_call(client.head_object, label, Bucket=bucket, Key=key),
                         retries=retries, backoff_s=backoff_s, log=log)
    etag = str(head.get("ETag", "")).strip('"').lower()
    server = {"size": int(head["ContentLength"])}
    if re.fullmatch("[0-9a-f]{32}", etag):
        server["md5"] = etag
    conflicts = _mismatches({name: expected[name] for name in server if name in expected}, server)
    if conflicts:
        raise DownloadError(f"{label}: the object on the server differs from the one "
                            f"expected: {'; '.join(conflicts)}")
    expected = {**server, **expected}
    if "md5" not in expected and not allow_unverified:
        raise DownloadError(
            f"{label}: ETag {etag!r} is not an MD5 (multipart upload) and no md5 was given "
            f"(pass md5, or allow_unverified=True to check the size only)"
        )

    measured = _existing(destination, expected, ["md5"], log=log)
    if measured is not None:
        log.info("%s: already present and verified", destination)
        return {**result, "downloaded": False, **measured, "seconds": 0.0}

    def open_stream():
        response = _s3_call(client.get_object, label, Bucket=bucket, Key=key)
        return response["Body"], response.get("ContentLength")

    log.info("%s -> %s", label, destination)
    measured = _transfer(open_stream, destination, expected, ["md5"], transient=_s3_transient,
                         label=label, retries=retries, backoff_s=backoff_s, log=log)
    return {**result, "downloaded": True, **measured}

