import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def job_counts(dry_run_output):
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    table = dry_run_output.split("Job stats:")[1]
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    }


def snakemake_command(*args, workdir, configfiles=()):
    """Command line running this checkout's workflow with the current interpreter."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir)]
    if configfiles:
        command += ["--configfile", *map(str, configfiles)]
    return command + list(args)


@pytest.fixture
def run_snakemake(tmp_path):
    """Run snakemake in a fresh working directory that holds a copy of the config folder."""
    shutil.copytree(REPO / "config", tmp_path / "config")

    def run(*args, configfile=None, extra_configfiles=(), check=True):
        """``configfile`` or several ``extra_configfiles`` (merged in order) over the default."""
        configfiles = ([configfile] if configfile is not None else []) + list(extra_configfiles)
        result = subprocess.run(
            snakemake_command(*args, workdir=tmp_path, configfiles=configfiles),
            capture_output=True, text=True, cwd=tmp_path,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    run.workdir = tmp_path
    return run


class Server:
    """What the local HTTP server serves, how it misbehaves, and the requests it received."""

    def __init__(self, root):
        self.root = root
        self.requests = []
        self.corrupt = set()
        self.truncated = set()  # paths whose connection closes after half the bytes
        self.missing = set()
        self.failures = {}  # path -> number of HTTP 500 answers still to give
        self.url = None

    def add(self, path, content):
        """Serve ``content`` (bytes or text) at ``/path``; returns the bytes."""
        content = content.encode() if isinstance(content, str) else content
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return content

    def count(self, path):
        return self.requests.count(f"/{path}")


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving files from a temporary folder."""
    # A proxy from the environment would intercept the requests to 127.0.0.1.
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                     "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    state = Server(tmp_path / "served")
    state.root.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path
            state.requests.append(path)
            name = path.lstrip("/")
            file = state.root / name
            if state.failures.get(name, 0) > 0:
                state.failures[name] -= 1
                self.send_error(500)
            elif name in state.missing or not file.is_file():
                self.send_error(404)
            else:
                content = file.read_bytes()
                if name in state.corrupt:
                    content = bytes([content[0] ^ 0xFF]) + content[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if name in state.truncated:
                    content = content[:len(content) // 2]
                self.wfile.write(content)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()
