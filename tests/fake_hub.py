"""A local stand-in for the Hugging Face Hub, enough for huggingface_hub 2.4's download and upload calls.

Reusable fixtures (import them into a test module or conftest.py):
    tiny_run_dir  (session) a 3-snapshot run trained with icl_core.training.train in a few seconds
    fake_hub      (function) a running FakeHub; HF_ENDPOINT points at it, the HF cache and
                  ICL_DATA_DIR are per-test temporary folders, HF_TOKEN/HF_HUB_OFFLINE are unset
    no_internet   (function, used by fake_hub) refuses and reports any connection beyond 127.0.0.1

Routes served (as the real Hub answers them):
    GET  /api/models/{repo}/revision/{rev}          repo info: {"id", "sha", "private", "siblings"}
    GET  /api/models/{repo}/tree/{rev}[/{path}]     [{"type": "file", "path", "size", "oid"[, "lfs"]}]: a file stored
                                                    in LFS (by the same rule as preupload's "lfs" answer) also
                                                    has "lfs": {"oid": its sha256, "size", "pointerSize"} and its
                                                    "oid" is the pointer's blob id (huggingface_hub hf_api.py,
                                                    RepoFile reads lfs["oid"] as sha256, lfs["pointerSize"])
    GET  /api/models/{repo}/refs                    {"branches": [{"name", "ref": "refs/heads/{name}",
                                                    "targetCommit"}], "converts": [], "tags": []} (+ "pullRequests"
                                                    with include_prs=1), as hf_api.list_repo_refs reads it
    HEAD|GET /{repo}/resolve/{rev}/{file}           X-Repo-Commit, ETag, Content-Length (+ body)
    POST /api/repos/create                          {"url"}; 409 if it exists
    POST /api/validate-yaml                         README front matter: always valid
    POST /api/{models|spaces}/{repo}/preupload/{rev}  "lfs" for a binary file (a NUL byte in its sample, as the
                                                    Hub's grep-like check: huggingface_hub PR #828), one of
                                                    10 MB or more, or one the repo's .gitattributes routes to
                                                    LFS; "regular" otherwise
    POST /{spaces/}{repo}.git/info/lfs/objects/batch  the git-lfs batch API (basic transfer: an upload href per
                                                    object not yet stored), as huggingface_hub/lfs.py reads it
    PUT  /lfs-objects/{oid}                         the upload itself; its sha256 must be the oid
    POST /api/{models|spaces}/{repo}/commit/{rev}   NDJSON: header, file (base64), lfsFile (a stored object),
                                                    deletedFile; a binary file sent as "file" is refused with
                                                    the Hub's pre-receive message (huggingface_hub #1404)
Uploads take the LFS path only (huggingface_hub's Xet client needs a CAS server: tests set HF_HUB_DISABLE_XET).
Errors: 404 + X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound (with X-Repo-Commit),
401 + RepoNotFound for a private repo without a token, 401 "Invalid credentials in Authorization header" for an
unknown token, 403 GatedRepo for a gated repo with a token that was not granted access.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import hashlib
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

LFS_SIZE = 10 * 1024 * 1024  # bytes: the Hub stores files this big through LFS/Xet whatever they hold
READ_TOKEN = "hf_fake_read_token"
WRITE_TOKEN = "hf_fake_write_token"


@functools.lru_cache(maxsize=32)  # a tree listing hashes every file: the benchmark's are 200 MB each
def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_patterns(gitattributes: bytes) -> list[str]:
    """The patterns a .gitattributes routes to LFS (filter=lfs)."""
    out = []
    for line in gitattributes.decode(errors="replace").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            out.append(fields[0])
    return out


def _matches(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)


def stored_in_lfs(path: str, data: bytes, lfs_rules: list[str]) -> bool:
    """Whether an upload puts this file in LFS: binary (a NUL byte in its first 512 bytes, the sample
    huggingface_hub sends to preupload), 10 MB or more, or routed there by the repo's .gitattributes."""
    return b"\0" in data[:512] or len(data) >= LFS_SIZE or _matches(path, lfs_rules)


def tree_entry(path: str, data: bytes, lfs_rules: list[str]) -> dict[str, Any]:
    """One file as the tree route lists it. For an LFS file the git blob is its pointer file (git-lfs spec v1)."""
    if not stored_in_lfs(path, data, lfs_rules):
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return {
        "type": "file",
        "path": path,
        "size": len(data),
        "oid": git_blob_oid(pointer),
        "lfs": {"oid": sha256, "size": len(data), "pointerSize": len(pointer)},
    }


@dataclass
class FakeRepo:
    repo_id: str
    private: bool = False
    gated: bool = False
    repo_type: str = "model"
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha

    def commit(self, files: dict[str, bytes], branch: str = "main", deleted: tuple[str, ...] = ()) -> str:
        """A new commit on `branch`: its current files, plus `files`, minus `deleted`."""
        parent = self.refs.get(branch)
        tree = {k: v for k, v in self.commits.get(parent, {}).items() if k not in deleted}
        tree.update(files)
        digest = hashlib.sha1(repr((parent, sorted((k, git_blob_oid(v)) for k, v in tree.items()))).encode())
        sha = digest.hexdigest()
        self.commits[sha] = tree
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """Repos in memory, served over HTTP on 127.0.0.1; `requests` logs (method, path) of every call."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.read_tokens = {READ_TOKEN, WRITE_TOKEN}
        self.write_tokens = {WRITE_TOKEN}
        self.requests: list[tuple[str, str]] = []
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded through the LFS batch API
        self.lfs_commits: list[str] = []  # paths committed as lfsFile
        self.fail_with: int | None = None  # answer every request with this HTTP status (e.g. 500)
        self.backoff: BackoffClock | None = None  # set by the fake_hub fixture: the client's retry waits
        self.answer_regular = False  # preupload says "regular" for every file: a client sending binaries inline
        self.strip_headers: set[str] = set()  # e.g. {"X-Repo-Commit"}: a server that is not a Hub
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- content ---------------------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, files: dict[str, bytes], private: bool = False, gated: bool = False, branch: str = "main"
    ) -> str:
        repo = self.repos.setdefault(repo_id, FakeRepo(repo_id, private=private, gated=gated))
        return repo.commit(files, branch=branch)

    def add_run(
        self, repo_id: str, run_dir: Path, extra: dict[str, bytes] | None = None, private: bool = False, **kw: Any
    ) -> str:
        files = {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir()) if p.is_file()}
        files.update(extra or {})
        return self.add_repo(repo_id, files, private=private, **kw)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    def fetched(self, filename: str) -> bool:
        """Whether any resolve call (HEAD or GET) asked for this file."""
        return any("/resolve/" in path and path.endswith("/" + filename) for _, path in self.requests)

    # -- server ----------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: later calls get 'connection refused', like a machine with no network."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_HEAD(self) -> None:
            self._handle("HEAD")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def _handle(self, method: str) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((method, path))
            try:
                if hub.fail_with is not None:
                    raise _Reply(hub.fail_with, headers={"X-Error-Message": "fake hub: failing on purpose"})
                with hub.lock:
                    status, body, headers = self._route(method, path)
            except _Reply as reply:
                status, body, headers = reply.status, reply.body, reply.headers
                if body is None:
                    body = {"error": headers.get("X-Error-Message", f"error {status}")}
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                if key not in hub.strip_headers:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        # -- helpers ------------------------------------------------------------------------------

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

        def _check_read(self, repo: FakeRepo | None, repo_id: str) -> FakeRepo:
            token = self._token()
            if token is not None and token not in hub.read_tokens:
                raise _Reply(401, headers={"X-Error-Message": "Invalid credentials in Authorization header"})
            if repo is None:
                raise _Reply(404, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            if (repo.private or repo.gated) and token is None:  # the Hub hides them: same code as missing
                raise _Reply(
                    401, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid username or password."}
                )
            if repo.gated and token != WRITE_TOKEN:  # only the "owner" was granted access
                raise _Reply(403, headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is gated"})
            return repo

        def _check_write(self) -> None:
            token = self._token()
            if token not in hub.write_tokens:
                raise _Reply(401, headers={"X-Error-Message": "Invalid credentials in Authorization header"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

        def _revision(self, repo: FakeRepo, revision: str) -> str:
            sha = repo.resolve(revision)
            if sha is None:
                raise _Reply(404, headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return sha

        # -- routes -------------------------------------------------------------------------------

        def _route(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo()
            if method == "POST" and path == "/api/validate-yaml":
                self._body()
                return 200, {"errors": [], "warnings": []}, {}
            if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-objects":
                return self._lfs_put(parts[1])
            if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
                prefix = path.strip("/")[: -len(".git/info/lfs/objects/batch")]
                repo_id = prefix.removeprefix("spaces/").removeprefix("datasets/")
                self._check_write()
                return self._lfs_batch(self._check_read(hub.repos.get(repo_id), repo_id))
            if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("models", "spaces"):
                repo_id = f"{parts[2]}/{parts[3]}"
                action, rest = parts[4], parts[5:]
                if method == "POST" and action in ("preupload", "commit") and rest:
                    self._check_write()
                    repo = self._check_read(hub.repos.get(repo_id), repo_id)
                    if action == "preupload":
                        return self._preupload(repo, unquote(rest[0]))
                    return self._commit(repo, unquote(rest[0]))
                repo = self._check_read(hub.repos.get(repo_id), repo_id)
                if method == "GET" and action == "revision" and rest:
                    sha = self._revision(repo, "/".join(rest))
                    siblings = [{"rfilename": p} for p in sorted(repo.commits[sha])]
                    info = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private}
                    return 200, {**info, "siblings": siblings}, {}
                if method == "GET" and action == "tree" and rest:
                    sha = self._revision(repo, unquote(rest[0]))
                    prefix = "/".join(rest[1:])
                    files = repo.commits[sha]
                    rules = _lfs_patterns(files.get(".gitattributes", b""))
                    entries = [
                        tree_entry(p, data, rules)
                        for p, data in sorted(files.items())
                        if not prefix or p.startswith(prefix.rstrip("/") + "/")
                    ]
                    return 200, entries, {}
            if len(parts) == 5 and parts[:2] == ["api", "models"] and parts[4] == "refs" and method == "GET":
                repo_id = f"{parts[2]}/{parts[3]}"
                repo = self._check_read(hub.repos.get(repo_id), repo_id)
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in sorted(repo.refs.items())
                ]
                body: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
                if "include_prs=1" in self.path:
                    body["pullRequests"] = []
                return 200, body, {}
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = f"{parts[0]}/{parts[1]}"
                repo = self._check_read(hub.repos.get(repo_id), repo_id)
                sha = self._revision(repo, parts[3])
                filename = unquote("/".join(parts[4:]))
                data = repo.commits[sha].get(filename)
                if data is None:
                    headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
                    raise _Reply(404, headers={**headers, "X-Error-Message": "Entry not found"})
                headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(data)}"'}
                return 200, data, headers
            raise _Reply(404, headers={"X-Error-Message": f"fake hub: no route for {method} {path}"})

        def _create_repo(self) -> tuple[int, Any, dict[str, str]]:
            self._check_write()
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization')}/{payload.get('name')}"
            if repo_id in hub.repos:  # the Hub's 409 carries the URL, which create_repo(exist_ok=True) returns
                error = "You already created this model repo"
                raise _Reply(409, {"error": error, "url": f"{hub.url}/{repo_id}"}, {"X-Error-Message": error})
            repo = hub.repos[repo_id] = FakeRepo(
                repo_id, private=payload.get("visibility") == "private", repo_type=payload.get("type") or "model"
            )
            repo.commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
            return 200, {"url": f"{hub.url}/{repo_id}", "name": repo_id}, {}

        def _preupload(self, repo: FakeRepo, revision: str) -> tuple[int, Any, dict[str, str]]:
            payload = json.loads(self._body())
            current = repo.commits.get(repo.resolve(revision) or "", {})
            lfs_rules = _lfs_patterns(current.get(".gitattributes", b""))
            files = []
            for f in payload["files"]:
                sample = base64.b64decode(f.get("sample", ""))
                lfs = b"\0" in sample or int(f.get("size", 0)) >= LFS_SIZE or _matches(f["path"], lfs_rules)
                files.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs and not hub.answer_regular else "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_oid(current[f["path"]]) if f["path"] in current else None,
                    }
                )
            return 200, {"files": files, "commitOid": repo.resolve(revision)}, {}

        def _lfs_batch(self, repo: FakeRepo) -> tuple[int, Any, dict[str, str]]:
            payload = json.loads(self._body())
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": int(obj["size"]), "authenticated": True}
                if obj["oid"] not in hub.lfs_objects:  # already stored: no actions, nothing to upload
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-objects/{obj['oid']}", "header": {}}}
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}, {}

        def _lfs_put(self, oid: str) -> tuple[int, Any, dict[str, str]]:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise _Reply(400, headers={"X-Error-Message": "LFS object does not match its oid"})
            hub.lfs_objects[oid] = data
            return 200, b"", {}

        def _commit(self, repo: FakeRepo, revision: str) -> tuple[int, Any, dict[str, str]]:
            lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
            parent = repo.resolve(revision)
            if parent is None:
                raise _Reply(404, headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            changes: dict[str, bytes] = {}
            deleted: list[str] = []
            binary: list[str] = []
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = base64.b64decode(value["content"])
                    if b"\0" in content[:8000]:  # git's own binary test looks at the first 8000 bytes
                        binary.append(value["path"])
                    changes[value["path"]] = content
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        raise _Reply(400, headers={"X-Error-Message": f"LFS object {value['oid']} was not uploaded"})
                    changes[value["path"]] = hub.lfs_objects[value["oid"]]
                    hub.lfs_commits.append(value["path"])
                elif key == "deletedFile":
                    deleted.append(value["path"])
                elif key != "header":
                    raise _Reply(400, headers={"X-Error-Message": f"fake hub does not support {key} operations"})
            if binary:  # the Hub's pre-receive hook (huggingface_hub #1404; its 2026 wording: qdonnars/ohmywind#289)
                offending = "\n".join(f"  - {p} (ref: refs/heads/{revision})" for p in binary)
                message = (
                    "Your push was rejected because it contains binary files.\nPlease use "
                    f"https://huggingface.co/docs/hub/xet to store binary files.\nOffending files:\n{offending}"
                )
                raise _Reply(400, {"error": message}, {"X-Error-Message": message.splitlines()[0]})
            if revision not in repo.refs:
                raise _Reply(400, headers={"X-Error-Message": "fake hub commits only to a branch"})
            sha = repo.commit(changes, branch=revision, deleted=tuple(deleted))
            return 200, {"commitUrl": f"{hub.url}/{repo.repo_id}/commit/{sha}", "commitOid": sha}, {}

    return Handler


def make_tiny_run(run_dir: Path) -> Path:
    from icl_core.model.config import ModelConfig, TrainConfig
    from icl_core.training.train import train

    cfg = TrainConfig(
        run_name=run_dir.name,
        model=ModelConfig(n_layers=1, n_heads=1, d_model=16, d_head=8, n_ctx=128),
        compute_icl_score=False,
        total_steps=3,
        n_snapshots=3,
        eval_examples=4,
        batch_size=2,
        log_every=1,
        device="cpu",
    )
    status = train(cfg, run_dir, command="tests/fake_hub.py")
    assert status == "finished"
    return run_dir


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")


def _is_loopback(host: object) -> bool:
    if host in ("localhost", None, ""):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse to reach any host but this machine (huggingface.co above all), and fail the test if tried.

    Libraries may swallow the refusal (huggingface_hub does for its side requests), hence the list.
    """
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect {address!r}")
            raise ConnectionRefusedError(f"tests may not connect to {address!r}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            attempts.append(f"resolve {host!r}")
            raise socket.gaierror(f"tests may not resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"the test tried to reach the internet: {attempts}"


class BackoffClock:
    """huggingface_hub's `time` module with its retry waits recorded instead of slept: the client still retries
    a 5xx or a refused connection five times as it would against the Hub (utils/_http.py, waits 1, 2, 4, 8, 8 s),
    but a test does not sit through the ~23 s of each failing download."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_internet: list[str]) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    # Building its user agent, huggingface_hub fetches an "agent harness" list from the endpoint it
    # read at import (huggingface.co), whatever endpoint= says; telemetry off skips that.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # Binary uploads take the LFS batch API, which the fake speaks; Xet's would need a CAS server.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # and in worker processes (background imports)
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path / "data"))
    for name in ("HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # Read once at import by huggingface_hub; a developer's shell may have set them.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    from huggingface_hub.utils import _http

    hub.backoff = BackoffClock()
    monkeypatch.setattr(_http, "time", hub.backoff)
    try:
        yield hub
    finally:
        hub.stop()
