"""The repository deployed to a Space through the (fake) Hub's commit API: binaries through LFS, as the Hub needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_hub import WRITE_TOKEN, FakeHub
from test_space import binary_files_outside_lfs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import deploy_space  # noqa: E402

from icl_core.errors import HubError  # noqa: E402


def test_the_repository_deploys_to_a_space_with_every_binary_file_through_lfs(fake_hub: FakeHub) -> None:
    url = deploy_space.deploy("someone/induction-explorer", token=WRITE_TOKEN)
    assert url.endswith("/spaces/someone/induction-explorer")
    space = fake_hub.repos["someone/induction-explorer"]
    assert space.repo_type == "space"
    files = fake_hub.files("someone/induction-explorer")
    tracked = deploy_space.tracked_files()
    assert set(tracked) <= set(files), "every tracked file is in the Space"
    assert {"app.py", "Dockerfile", "checkpoints/attn2/run.json"} <= set(tracked)
    assert not {p for p in files if p.startswith((".venv/", "runs/", "staging/"))}, "no local state, no staging runs"
    assert all(files[p] == (ROOT / p).read_bytes() for p in ("app.py", "Dockerfile", "README.md"))
    binary = [p for p in tracked if b"\0" in (ROOT / p).read_bytes()[:8000]]
    assert len(binary) > 300 and set(binary) <= set(fake_hub.lfs_commits), "binaries sent through LFS, not inline"
    assert "app.py" not in fake_hub.lfs_commits, "text stays a regular file"
    outside, _ = binary_files_outside_lfs(ROOT)
    assert not outside


def test_a_binary_file_sent_inline_is_refused_as_the_hub_refuses_it(fake_hub: FakeHub, tmp_path: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "weights.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      " + bytes(range(256)))
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    fake_hub.answer_regular = True  # a client that ignores the Hub's answer and sends every file inline
    with pytest.raises(HubError, match="binary files"):
        deploy_space.deploy("someone/bad-space", token=WRITE_TOKEN, root=tmp_path)
    assert "weights.safetensors" not in fake_hub.files("someone/bad-space")
    fake_hub.answer_regular = False
    deploy_space.deploy("someone/bad-space", token=WRITE_TOKEN, root=tmp_path)
    assert fake_hub.lfs_commits == ["weights.safetensors"]
    assert fake_hub.files("someone/bad-space")["weights.safetensors"] == (tmp_path / "weights.safetensors").read_bytes()


def test_deploying_without_a_token_or_offline_is_one_clear_message(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HubError, match="token"):
        deploy_space.deploy("someone/space")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="Offline"):
        deploy_space.deploy("someone/space", token=WRITE_TOKEN)


def test_a_dry_run_lists_what_would_go_and_how_and_sends_nothing(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy_space.main(["someone/dry", "--dry-run"]) == 0
    assert not fake_hub.repos.get("someone/dry"), "a dry run creates nothing"
    out = capsys.readouterr().out
    plan = deploy_space.upload_plan()
    assert [p for p, _, _ in plan] == deploy_space.tracked_files()
    assert f"{len(plan)} files" in out and "nothing was sent" in out
    rows = {line.split()[-1]: line for line in out.splitlines() if line.strip()}
    size = (ROOT / "app.py").stat().st_size
    assert f"{size:,}" in rows["app.py"] and "regular" in rows["app.py"]
    assert "LFS" in rows["checkpoints/attn2/step_000000.safetensors"]
    # What the plan says goes through LFS is what the (fake) Hub's preupload answers when the files are sent.
    deploy_space.deploy("someone/dry-then-real", token=WRITE_TOKEN)
    assert {p for p, _, how in plan if how.startswith("LFS")} == set(fake_hub.lfs_commits)
