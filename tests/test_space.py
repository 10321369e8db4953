"""The Hugging Face Space packaging, checked without Docker: README.md's front matter and the Dockerfile agree.

A Space built with the Docker SDK reads `sdk: docker` and `app_port` from README.md's YAML front matter, builds
the Dockerfile and runs the container as uid 1000. These tests parse both files (and .dockerignore) and check
that the port, the command, the user and the installed requirements line up, so a broken Space shows up here
instead of in the Space's build log.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def front_matter() -> dict:
    text = README.read_text(encoding="utf-8")
    match = re.match(r"\A---\r?\n(.*?)\r?\n---\r?\n", text, re.DOTALL)
    assert match, "README.md must start with a YAML front matter block between '---' lines (the Space config)"
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict), f"README.md front matter is not a mapping: {meta!r}"
    return meta


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        name, _, args = full.partition(" ")
        instructions.append((name.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def args_of(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def exec_form(args: str) -> list[str]:
    """A CMD/ENTRYPOINT's argv: JSON exec form, or shell form split like sh would."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for args in args_of("ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use ENV KEY=value (got {item!r})"
            values[key] = value
    return values


def test_front_matter_is_a_docker_space() -> None:
    meta = front_matter()
    assert meta.get("sdk") == "docker", "Streamlit Spaces run through the Docker SDK (sdk: streamlit is deprecated)"
    assert meta.get("app_port") == 8501 and isinstance(meta["app_port"], int)
    assert isinstance(meta.get("title"), str) and meta["title"].strip()
    emoji = meta.get("emoji")
    assert isinstance(emoji, str) and 0 < len(emoji) <= 2 and not emoji.isascii(), f"emoji: {emoji!r}"
    assert meta.get("colorFrom") in SPACE_COLORS and meta.get("colorTo") in SPACE_COLORS
    assert meta.get("pinned") is False
    tags = meta.get("tags")
    assert isinstance(tags, list) and "streamlit" in tags
    if "short_description" in meta:
        assert len(meta["short_description"]) <= 60, "the Hub rejects a short_description over 60 characters"


def test_front_matter_reads_with_huggingface_hub() -> None:
    from huggingface_hub import SpaceCard

    data = SpaceCard.load(README).data
    meta = front_matter()
    assert data.sdk == meta["sdk"] and data.app_port == meta["app_port"] and data.title == meta["title"]


def test_dockerfile_serves_app_on_the_spaces_port() -> None:
    port = str(front_matter()["app_port"])
    (base,) = args_of("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), f"base image {base!r}: want python:3.11-slim"
    exposed = " ".join(args_of("EXPOSE")).split()
    assert port in exposed, f"EXPOSE {exposed} lacks app_port {port}"

    (cmd,) = args_of("CMD")
    argv = exec_form(cmd)
    assert argv[:3] == ["streamlit", "run", "app.py"] or argv[:5] == ["python", "-m", "streamlit", "run", "app.py"]
    flags = " ".join(argv)
    assert re.search(rf"--server\.port[= ]{port}\b", flags), f"CMD must pass --server.port={port}: {argv}"
    assert re.search(r"--server\.address[= ]0\.0\.0\.0\b", flags), f"CMD must listen on 0.0.0.0: {argv}"
    assert not args_of("ENTRYPOINT"), "an ENTRYPOINT would wrap the CMD checked here"

    (health,) = args_of("HEALTHCHECK")
    assert f":{port}/_stcore/health" in health, f"HEALTHCHECK must probe /_stcore/health on {port}: {health}"
    assert (ROOT / "app.py").is_file()


def test_dockerfile_installs_requirements_with_cpu_torch() -> None:
    steps = dockerfile()
    pip_steps = [i for i, (instr, args) in enumerate(steps) if instr == "RUN" and "pip install" in args]
    assert pip_steps, "no RUN pip install"
    install = next((i for i in pip_steps if "-r requirements.txt" in steps[i][1]), None)
    assert install is not None, "the Dockerfile must install requirements.txt (the single list of dependencies)"
    args = steps[install][1]
    assert "--no-cache-dir" in args
    assert f"--extra-index-url {CPU_TORCH_INDEX}" in args, "a Space has no GPU: take torch's small CPU wheel"
    copied = [i for i, (instr, a) in enumerate(steps) if instr == "COPY" and "requirements.txt" in a.split()]
    assert copied and copied[0] < install, "COPY requirements.txt before installing it (and before COPY . .)"
    # requirements.txt itself stays portable: a plain torch pin, no index options.
    reqs = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==[\d.]+$", reqs, re.MULTILINE), "requirements.txt should pin torch==X.Y.Z"
    assert "--extra-index-url" not in reqs and "--index-url" not in reqs and "+cpu" not in reqs


def test_dockerfile_runs_as_uid_1000_with_read_only_code_and_a_writable_data_dir() -> None:
    steps = dockerfile()
    useradd = [args for instr, args in steps if instr == "RUN" and "useradd" in args]
    assert useradd, "create the Space's user: RUN useradd -m -u 1000 user"
    match = re.search(r"(?:-u|--uid)[ =]1000\b.*?\s(\w+)\s*$", useradd[0])
    assert match, f"the user must have uid 1000: {useradd[0]}"
    user = match.group(1)
    users = [(i, args) for i, (instr, args) in enumerate(steps) if instr == "USER"]
    assert users and users[-1][1] in (user, "1000"), f"the container must end as USER {user}, not root"
    last_user = users[-1][0]
    cmd_at = next(i for i, (instr, _) in enumerate(steps) if instr == "CMD")
    assert last_user < cmd_at

    env = env_values()
    assert env.get("HOME") == f"/home/{user}"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "the server must not write bytecode beside the app's code"
    workdir = args_of("WORKDIR")[-1]
    data_dir = env.get("ICL_DATA_DIR", "")
    assert data_dir.startswith(f"/home/{user}/"), f"ICL_DATA_DIR must be under the user's home: {data_dir!r}"
    assert not data_dir.startswith(workdir + "/"), "runs and jobs are written outside the app's code"
    # The code is copied as root (no --chown, before USER) and made read-only; only the data folder is the user's.
    for i, (instr, args) in enumerate(steps):
        if instr == "COPY":
            assert i < last_user and "--chown" not in args, f"COPY the app as root, before USER: {args}"
    lock = [a for i, (instr, a) in enumerate(steps) if instr == "RUN" and i < last_user and "chmod -R a-w" in a]
    assert lock and workdir in lock[0], f"make {workdir} read-only to everyone (chmod -R a-w) before USER"
    assert "compileall" in lock[0], "compile the bytecode at build time, as root"
    assert re.search(rf'chown {user}(:{user})? "?\$ICL_DATA_DIR"?', lock[0]), f"give ICL_DATA_DIR to {user}"


def test_app_honours_icl_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from icl_core.storage import runs

    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    assert runs.data_dir() == tmp_path
    assert runs.user_runs_dir().is_relative_to(tmp_path)


# .dockerignore: Docker's rules, simplified (Go filepath.Match plus **, last matching line wins, ! re-includes).


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]  # a matched folder excludes its contents
    ignored = False
    for negate, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_app_and_drops_local_state() -> None:
    rules = _ignore_rules()
    needed = ["app.py", "explorer.py", "requirements.txt", "README.md"]
    for pattern in ("pages/*.py", "ui/*.py", "icl_core/*.py", "configs/*.json", "checkpoints/*/*"):
        needed += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob(pattern)) if "resume." not in p.name]
    lost = [p for p in needed if dockerignored(p, rules)]
    assert not lost, f".dockerignore drops files the app needs: {lost}"
    for junk in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/my-run/run.json",
        "jobs/0001/status.json",
        "icl_core/__pycache__/model.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "checkpoints/attn2/resume.safetensors",
        "staging/issue26/runs/attn2/step_000000.safetensors",
    ):
        assert dockerignored(junk, rules), f".dockerignore should exclude {junk}"


def binary_files_outside_lfs(root: Path) -> tuple[list[str], int]:
    """(binary files not routed to LFS/Xet by .gitattributes, how many binary files there are) among the files git
    would push from `root`: tracked ones and new ones it does not ignore. "Binary" is git's own judgement
    (`git ls-files --eol`: -text in the index or the work tree), which is what the Hub's pre-receive hook checks:
    it refuses any binary blob that is not an LFS/Xet pointer, whatever its size."""
    listed = subprocess.run(
        ["git", "ls-files", "--eol", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    binary = []
    for entry in filter(None, listed.split("\0")):
        flags, _, rel = entry.partition("\t")
        if "i/-text" in flags.split() or "w/-text" in flags.split():
            binary.append(rel)
    if not binary:
        return [], 0
    attrs = subprocess.run(
        ["git", "check-attr", "-z", "filter", "--stdin"], cwd=root, input="\0".join(binary) + "\0",
        capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    values = dict(zip(attrs[0::3], attrs[2::3], strict=False))
    return sorted(rel for rel in binary if values.get(rel) != "lfs"), len(binary)


def test_every_binary_file_the_repo_ships_is_stored_through_lfs() -> None:
    try:
        outside, n_binary = binary_files_outside_lfs(ROOT)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the tests run from a git checkout (CI clones the repo): {exc}")
    assert n_binary > 300, "the shipped snapshots, the evaluation set and the screenshots are binary"
    assert not outside, f"binary files the Hub would refuse (add their type to .gitattributes): {outside[:10]}"


def test_the_binary_check_finds_an_uncovered_file(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_text((ROOT / ".gitattributes").read_text())
    (tmp_path / "weights.safetensors").write_bytes(b"\0\1\2" * 100)
    (tmp_path / "data.dat").write_bytes(b"\0\xff" * 100)
    (tmp_path / "notes.txt").write_text("text is fine")
    outside, n_binary = binary_files_outside_lfs(tmp_path)
    assert outside == ["data.dat"] and n_binary == 2


def test_streamlit_run_app_py_serves_explorer_py_with_its_modules_imported_first() -> None:
    """`streamlit run app.py` (start.sh, the Dockerfile) finds app.py's st.App and serves explorer.py; its start-up
    imports every ui module (torch, pandas, Altair with them) before the first visit."""
    import subprocess
    import sys

    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app.py")
    assert found.is_asgi_app and found.app_name == "app"
    code = (
        "import sys, pkgutil, app, ui\n"
        "assert 'torch' not in sys.modules\n"  # importing app.py alone imports none of them ...
        "app._import_app_modules()\n"
        "missing = [m.name for m in pkgutil.iter_modules(ui.__path__) if f'ui.{m.name}' not in sys.modules]\n"
        "assert not missing and 'torch' in sys.modules and 'altair' in sys.modules, missing\n"  # ... its start-up all
        "assert app.app.script_path.name == 'explorer.py', app.app.script_path\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_writer_lock_files_are_neither_tracked_nor_trackable() -> None:
    """A run's writer lock (icl_core/storage/lock.py) is the state of a process on one machine: tracked, it shipped in
    every upload to the Space and in the image. It stays out of git, and .gitignore keeps it out."""
    from icl_core.storage.lock import WRITER_LOCK

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [p for p in tracked.splitlines() if Path(p).name == WRITER_LOCK]
    for path in (f"checkpoints/attn2/{WRITER_LOCK}", f"runs/mine/{WRITER_LOCK}"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is not ignored"
