import hashlib
import io
import json
import logging
import runpy
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from noise2average import download
from noise2average.download import (
    DownloadError,
    annex_key_url,
    fetch,
    fetch_s3,
    openneuro_url,
    parse_annex_key,
    resolve_checksum,
    verify_file,
)

REPO = Path(__file__).resolve().parents[1]
MD5 = "0b18513b46132b4d1051ed3364f2acbc"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
SECRET = "fake-secret-value-do-not-leak"


@pytest.fixture(autouse=True)
def progress_every_chunk(monkeypatch):
    """Every chunk logs a progress line, so the tests see the log of a long download."""
    monkeypatch.setattr(download, "_PROGRESS_S", 0.0)


def md5(data):
    return hashlib.md5(data).hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()




@pytest.fixture
def bids(server):
    """A tiny BIDS-like dataset on the server: path -> served bytes."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    data = np.random.default_rng(0).normal(size=(4, 5, 3, 3)).astype(np.float32)
    image_path = server.root / "ds000001/sub-01/dwi/sub-01_dwi.nii.gz"
    image_path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, affine), image_path)
    files = {
        "ds000001/dataset_description.json": server.add(
            "ds000001/dataset_description.json",
            json.dumps({"Name": "test", "BIDSVersion": "1.8.0"}),
        ),
        "ds000001/sub-01/dwi/sub-01_dwi.nii.gz": image_path.read_bytes(),
        "ds000001/sub-01/dwi/sub-01_dwi.bval": server.add(
            "ds000001/sub-01/dwi/sub-01_dwi.bval", "0 1000 1000\n"),
        "ds000001/sub-01/dwi/sub-01_dwi.bvec": server.add(
            "ds000001/sub-01/dwi/sub-01_dwi.bvec", "0 1 0\n0 0 1\n0 0 0\n"),
    }
    return files, data


def leftovers(folder):
    return sorted(path.name for path in Path(folder).iterdir()) if Path(folder).exists() else []


# -- fetch over HTTP ---------------------------------------------------------------------


def test_fetch_verifies_a_bids_tree_by_md5_and_sha256(server, bids, tmp_path):
    files, data = bids
    for index, (path, content) in enumerate(files.items()):
        checksum = {"md5": md5(content)} if index % 2 else {"sha256": sha256(content)}
        result = fetch(f"{server.url}/{path}", tmp_path / "out" / path, size=len(content),
                       backoff_s=0, **checksum)
        assert result["downloaded"] is True
        assert result["size"] == len(content)
        assert result[next(iter(checksum))] == next(iter(checksum.values()))
        assert (tmp_path / "out" / path).read_bytes() == content
    image = nib.load(tmp_path / "out/ds000001/sub-01/dwi/sub-01_dwi.nii.gz")
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32), data)
    assert leftovers(tmp_path / "out/ds000001/sub-01/dwi") == [
        "sub-01_dwi.bval", "sub-01_dwi.bvec", "sub-01_dwi.nii.gz"
    ]


def test_second_fetch_makes_no_request(server, tmp_path):
    content = server.add("a.bin", b"x" * 3000)
    destination = tmp_path / "out" / "a.bin"
    fetch(f"{server.url}/a.bin", destination, md5=md5(content))
    again = fetch(f"{server.url}/a.bin", destination, md5=md5(content), sha256=sha256(content))
    assert again["downloaded"] is False
    assert again["sha256"] == sha256(content)
    assert server.count("a.bin") == 1


def test_stale_destination_is_replaced(server, tmp_path):
    content = server.add("a.bin", b"new content")
    destination = tmp_path / "a.bin"
    destination.write_bytes(b"old content")
    assert fetch(f"{server.url}/a.bin", destination, md5=md5(content))["downloaded"] is True
    assert destination.read_bytes() == content
    # A stale file is removed even when no new one can be had.
    destination.write_bytes(b"old content")
    server.missing.add("a.bin")
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/a.bin", destination, md5=md5(content))
    assert not destination.exists()


def test_corrupt_download_is_refused_and_removed(server, tmp_path):
    content = server.add("a.bin", b"some bytes of data")
    server.corrupt.add("a.bin")
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as caught:
        fetch(f"{server.url}/a.bin", out / "a.bin", md5=md5(content), retries=1, backoff_s=0)
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert f"{server.url}/a.bin" in message and str(out / "a.bin") in message
    bad = bytes([content[0] ^ 0xFF]) + content[1:]
    assert md5(content) in message and md5(bad) in message
    assert server.count("a.bin") == 2  # the mismatch was retried once
    assert leftovers(out) == []


def test_missing_file_fails_at_once(server, tmp_path):
    server.add("a.bin", b"exists but is hidden")
    server.missing.add("a.bin")
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"not found on the server \(HTTP 404\)") as caught:
        fetch(f"{server.url}/a.bin", out / "a.bin", md5=MD5, backoff_s=0)
    assert f"{server.url}/a.bin" in str(caught.value)
    assert server.count("a.bin") == 1
    assert leftovers(out) == []


def test_server_errors_are_retried(server, tmp_path, caplog):
    content = server.add("a.bin", b"eventually served")
    server.failures["a.bin"] = 2
    with caplog.at_level(logging.INFO, logger="noise2average.download"):
        result = fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(content),
                       retries=2, backoff_s=0)
    assert result["downloaded"] is True
    assert server.count("a.bin") == 3
    assert "HTTP 500" in caplog.text and "MB/s" in caplog.text


def test_persistent_server_errors_give_up(server, tmp_path):
    server.add("a.bin", b"never served")
    server.failures["a.bin"] = 10
    with pytest.raises(DownloadError, match=r"HTTP 500.*after 3 attempts"):
        fetch(f"{server.url}/a.bin", tmp_path / "out" / "a.bin", md5=MD5, retries=2, backoff_s=0)
    assert server.count("a.bin") == 3
    assert leftovers(tmp_path / "out") == []


def test_unreachable_server_is_retried_then_reported(tmp_path, server):
    url = server.url.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens there
    with pytest.raises(DownloadError, match="connection failed.*after 2 attempts"):
        fetch(f"{url}/a.bin", tmp_path / "a.bin", md5=MD5, retries=1, backoff_s=0, timeout_s=5)


def test_connection_closed_early_is_detected(server, tmp_path):
    content = server.add("a.bin", b"0123456789")
    server.truncated.add("a.bin")
    with pytest.raises(DownloadError, match=r"transfer incomplete \(5 of 10 bytes\)"):
        fetch(f"{server.url}/a.bin", tmp_path / "out" / "a.bin", md5=md5(content), retries=1,
              backoff_s=0)
    assert server.count("a.bin") == 2
    assert leftovers(tmp_path / "out") == []


def test_wrong_size_is_detected(server, tmp_path):
    content = server.add("a.bin", b"twelve bytes")
    with pytest.raises(DownloadError, match=r"size mismatch \(expected 13 bytes, got 12\)"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", size=13, md5=md5(content),
              retries=0)
    assert leftovers(tmp_path) == ["served"]


def test_checksum_is_required_unless_waived(server, tmp_path):
    content = server.add("a.bin", b"unverified")
    with pytest.raises(ValueError, match="allow_unverified"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert server.requests == []
    result = fetch(f"{server.url}/a.bin", tmp_path / "a.bin", allow_unverified=True)
    assert result["sha256"] == sha256(content)
    with pytest.raises(ValueError, match="not an md5 hex digest"):
        fetch(f"{server.url}/a.bin", tmp_path / "b.bin", md5="abc")


def test_verify_file_reports_expected_and_actual(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"test")
    assert verify_file(path, size=4, sha256=SHA256) == {"size": 4, "sha256": SHA256}
    with pytest.raises(DownloadError) as caught:
        verify_file(path, md5=MD5)
    assert str(path) in str(caught.value)
    assert MD5 in str(caught.value) and md5(b"test") in str(caught.value)
    with pytest.raises(DownloadError, match="cannot read"):
        verify_file(tmp_path / "missing.bin", md5=MD5)


# -- OpenNeuro addresses and annex keys ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"MD5E-s14600123--{MD5}.nii.gz", {"size": 14600123, "md5": MD5}),
        (f"SHA256E-s4--{SHA256}.bval", {"size": 4, "sha256": SHA256}),
        (f"SHA256-s4--{SHA256.upper()}", {"size": 4, "sha256": SHA256}),
        (f"../../.git/annex/objects/Xx/Yy/MD5E-s1--{MD5}.nii.gz/MD5E-s1--{MD5}.nii.gz",
         {"size": 1, "md5": MD5}),
        (f"/annex/objects/SHA256E-s4--{SHA256}.nii.gz\n", {"size": 4, "sha256": SHA256}),
    ],
)
def test_parse_annex_key(text, expected):
    assert parse_annex_key(text) == expected


@pytest.mark.parametrize("text", ['{"Name": "x"}', f"MD5E-s1--{MD5[:-1]}.nii.gz",
                                  f"SHA1-s1--{MD5[:40]}"])
def test_parse_annex_key_refuses_other_text(text):
    with pytest.raises(ValueError, match="not a git-annex") as caught:
        parse_annex_key(text)
    assert text[:10] in str(caught.value)


def test_openneuro_url_is_validated():
    assert (openneuro_url("ds000001", "sub-01/anat/sub-01_T1w.nii.gz")
            == "https://s3.amazonaws.com/openneuro.org/ds000001/sub-01/anat/sub-01_T1w.nii.gz")
    for bad_id in ("ds1", "DS000001", "ds000001/..", "000001"):
        with pytest.raises(ValueError, match="dataset id"):
            openneuro_url(bad_id, "a.nii.gz")
    for bad_path in ("/etc/passwd", "../ds000002/a.nii.gz", "sub-01/../../x", ""):
        with pytest.raises(ValueError, match="relative path"):
            openneuro_url("ds000001", bad_path)
    assert (annex_key_url("ds000001", "1.0.0", "sub-01/a.nii.gz", base_url="http://h/")
            == "http://h/ds000001/1.0.0/sub-01/a.nii.gz")
    with pytest.raises(ValueError, match="snapshot tag"):
        annex_key_url("ds000001", "../main", "a.nii.gz")


def test_resolve_checksum_then_fetch(server, bids, tmp_path):
    files, _ = bids
    content = files["ds000001/sub-01/dwi/sub-01_dwi.nii.gz"]
    key = f"SHA256E-s{len(content)}--{sha256(content)}.nii.gz"
    server.add("mirror/ds000001/1.0.0/sub-01/dwi/sub-01_dwi.nii.gz",
               f"../../../.git/annex/objects/Ab/Cd/{key}/{key}")
    expected = resolve_checksum("ds000001", "1.0.0", "sub-01/dwi/sub-01_dwi.nii.gz",
                                base_url=f"{server.url}/mirror")
    assert expected == {"size": len(content), "sha256": sha256(content)}
    url = openneuro_url("ds000001", "sub-01/dwi/sub-01_dwi.nii.gz", base_url=server.url)
    assert fetch(url, tmp_path / "dwi.nii.gz", **expected)["downloaded"] is True


def test_resolve_checksum_of_git_files_and_missing_files(server, bids, tmp_path):
    # Files kept in git (not annexed) are served whole: their own size and SHA-256.
    description = b'{\n  "Name": "x"\n}\n'
    server.add("mirror/ds000001/1.0.0/dataset_description.json", description)
    expected = resolve_checksum("ds000001", "1.0.0", "dataset_description.json",
                                base_url=f"{server.url}/mirror")
    assert expected == {"size": len(description), "sha256": sha256(description)}
    # A small file whose text merely mentions a key is such a file, not a key.
    changes = f"1.0.0\n  - replaced MD5E-s1--{MD5}.nii.gz\n".encode()
    server.add("mirror/ds000001/1.0.0/CHANGES", changes)
    assert resolve_checksum("ds000001", "1.0.0", "CHANGES", base_url=f"{server.url}/mirror") \
        == {"size": len(changes), "sha256": sha256(changes)}
    with pytest.raises(DownloadError, match=r"sub-02/a.nii.gz.*not found on the server"):
        resolve_checksum("ds000001", "1.0.0", "sub-02/a.nii.gz", base_url=f"{server.url}/mirror")
    assert server.count("mirror/ds000001/1.0.0/sub-02/a.nii.gz") == 1


# -- HCP from S3 --------------------------------------------------------------------------


class FakeError(Exception):
    """Shaped like botocore's ClientError."""

    def __init__(self, status, code):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class FakeS3:
    """An S3 client serving ``objects`` (key -> bytes) with an MD5 or multipart ETag."""

    def __init__(self, objects, *, etags=None, served=None):
        self.objects = objects
        self.etags = etags or {}
        self.served = served or {}  # key -> bytes sent instead of the object
        self.calls = []

    def head_object(self, *, Bucket, Key):
        self.calls.append(("head", Bucket, Key))
        if Key not in self.objects:
            raise FakeError(404, "404")
        content = self.objects[Key]
        return {"ContentLength": len(content), "ETag": f'"{self.etags.get(Key, md5(content))}"'}

    def get_object(self, *, Bucket, Key):
        self.calls.append(("get", Bucket, Key))
        content = self.served.get(Key, self.objects[Key])
        return {"Body": io.BytesIO(content), "ContentLength": len(content)}


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET + "-token")


KEY = "HCP_1200/100307/T1w/T1w_acpc_dc.nii.gz"


def test_fetch_s3_verifies_the_etag_md5(tmp_path, credentials, monkeypatch, caplog):
    content = b"an HCP image" * 100
    client = FakeS3({KEY: content})
    made = []

    def make_client(service, **arguments):
        made.append((service, arguments))
        return client

    # Stands in for boto3, to check that the client gets the environment's credentials.
    monkeypatch.setitem(sys.modules, "boto3", type(sys)("boto3"))
    sys.modules["boto3"].client = make_client
    destination = tmp_path / "out" / "T1w.nii.gz"
    with caplog.at_level(logging.DEBUG):
        result = fetch_s3("hcp-openaccess", KEY, destination, size=len(content))
        again = fetch_s3("hcp-openaccess", KEY, destination, md5=md5(content))
    assert made == [("s3", {"aws_access_key_id": "AKIAFAKEKEYID",
                            "aws_secret_access_key": SECRET,
                            "aws_session_token": SECRET + "-token"})]
    assert result["downloaded"] is True and again["downloaded"] is False
    assert result["md5"] == md5(content) and destination.read_bytes() == content
    assert [call[0] for call in client.calls] == ["head", "get"]  # the second made none
    assert result["url"] == f"s3://hcp-openaccess/{KEY}"
    assert SECRET not in caplog.text and SECRET not in repr(result)
    assert leftovers(destination.parent) == ["T1w.nii.gz"]


def test_fetch_s3_rejects_a_corrupt_transfer(tmp_path, credentials, caplog):
    content = b"an HCP image"
    client = FakeS3({KEY: content}, served={KEY: b"an HCP imagE"})
    destination = tmp_path / "out" / "T1w.nii.gz"
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError) as caught:
        fetch_s3("hcp-openaccess", KEY, destination, client=client, retries=1, backoff_s=0)
    message = str(caught.value)
    assert "checksum mismatch" in message and md5(content) in message
    assert f"s3://hcp-openaccess/{KEY}" in message
    assert [call[0] for call in client.calls] == ["head", "get", "get"]
    assert leftovers(destination.parent) == []
    assert SECRET not in message and SECRET not in caplog.text


def test_fetch_s3_refuses_an_object_unlike_the_configured_one(tmp_path):
    content = b"an HCP image"
    client = FakeS3({KEY: content})
    with pytest.raises(DownloadError, match="differs from the one expected.*checksum mismatch"):
        fetch_s3("hcp-openaccess", KEY, tmp_path / "a", md5=MD5, client=client)
    with pytest.raises(DownloadError, match=r"size mismatch \(expected 5 bytes"):
        fetch_s3("hcp-openaccess", KEY, tmp_path / "a", size=5, client=client)
    assert [call[0] for call in client.calls] == ["head", "head"]
    assert leftovers(tmp_path) == []


def test_fetch_s3_multipart_etag_needs_an_md5(tmp_path):
    content = b"a large HCP image"
    client = FakeS3({KEY: content}, etags={KEY: f"{MD5}-3"})
    with pytest.raises(DownloadError, match="not an MD5.*no md5 was given"):
        fetch_s3("hcp-openaccess", KEY, tmp_path / "a", client=client)
    result = fetch_s3("hcp-openaccess", KEY, tmp_path / "a", md5=md5(content), client=client)
    assert result["downloaded"] is True


def test_fetch_s3_missing_object(tmp_path):
    with pytest.raises(DownloadError, match=r"s3://hcp-openaccess/nope.*not found.*404"):
        fetch_s3("hcp-openaccess", "nope", tmp_path / "a", client=FakeS3({}), backoff_s=0)


def test_fetch_s3_needs_credentials_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEYID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setattr(download, "_s3_client", lambda: pytest.fail("client made"))
    with pytest.raises(DownloadError) as caught:
        fetch_s3("hcp-openaccess", KEY, tmp_path / "a")
    message = str(caught.value)
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "AKIAFAKEKEYID" not in message
    assert leftovers(tmp_path) == []


def test_fetch_s3_without_boto3_says_what_to_install(tmp_path, credentials, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes "import boto3" fail
    with pytest.raises(DownloadError, match=r"pip install 'noise2average\[download\]'") as caught:
        fetch_s3("hcp-openaccess", KEY, tmp_path / "a")
    assert SECRET not in str(caught.value)


# -- the workflow script ------------------------------------------------------------------


@pytest.fixture
def run_script(monkeypatch):
    """Run a workflow script with a fake ``snakemake`` object, restoring global logging."""
    from snakemake.iocontainers import Namedlist

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)

    def run(name, *, params, output, log):
        fake = type("Snakemake", (), {})()
        fake.params = Namedlist(fromdict=params)
        fake.output = Namedlist(fromdict=output)
        fake.log = Namedlist([str(log)])
        try:
            runpy.run_path(str(REPO / "workflow" / "scripts" / name),
                           init_globals={"snakemake": fake})
        finally:
            logging.captureWarnings(False)
            for handler in logging.getLogger().handlers:
                handler.close()

    return run


def test_download_script_resolves_the_annex_key(server, bids, tmp_path, run_script):
    files, _ = bids
    content = files["ds000001/sub-01/dwi/sub-01_dwi.bval"]
    key = f"MD5E-s{len(content)}--{md5(content)}.bval"
    server.add("mirror/ds000001/1.0.0/sub-01/dwi/sub-01_dwi.bval", f".git/annex/objects/{key}")
    output = {"file": str(tmp_path / "raw/dwi.bval"), "record": str(tmp_path / "raw/dwi.json")}
    run_script(
        "download_file.py",
        params={"download": {
            "source": "openneuro", "url": f"{server.url}/ds000001/sub-01/dwi/sub-01_dwi.bval",
            "dataset_id": "ds000001", "version": "1.0.0", "path": "sub-01/dwi/sub-01_dwi.bval",
            "annex_base_url": f"{server.url}/mirror", "retries": 0,
        }},
        output=output, log=tmp_path / "download.log",
    )
    assert Path(output["file"]).read_bytes() == content
    record = json.loads(Path(output["record"]).read_text())
    assert record["checksum_origin"] == "snapshot 1.0.0"
    assert record["md5"] == md5(content) and record["size"] == len(content)
    assert "MB/s" in (tmp_path / "download.log").read_text()


def test_download_script_hcp_never_logs_credentials(tmp_path, credentials, monkeypatch,
                                                    run_script):
    content = b"an HCP image"
    monkeypatch.setattr(download, "_s3_client", lambda: FakeS3({KEY: content}))
    output = {"file": str(tmp_path / "raw/T1w.nii.gz"), "record": str(tmp_path / "raw/T1w.json")}
    run_script("download_file.py",
               params={"download": {"source": "hcp", "bucket": "hcp-openaccess", "key": KEY}},
               output=output, log=tmp_path / "download.log")
    record = json.loads(Path(output["record"]).read_text())
    assert record["checksum_origin"] == "S3 ETag" and record["md5"] == md5(content)
    assert record["url"] == f"s3://hcp-openaccess/{KEY}"
    for text in ((tmp_path / "download.log").read_text(), Path(output["record"]).read_text()):
        assert SECRET not in text and "AKIAFAKEKEYID" not in text


def test_file_digests_agree_with_hashlib_over_several_chunks(tmp_path):
    from noise2average.download import _CHUNK, file_digests

    content = np.random.default_rng(3).bytes(2 * _CHUNK + 123)
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    assert file_digests(path, ["md5", "sha256"]) == {
        "size": len(content), "md5": hashlib.md5(content).hexdigest(),
        "sha256": hashlib.sha256(content).hexdigest()}
    assert file_digests(path).keys() == {"size", "sha256"}
