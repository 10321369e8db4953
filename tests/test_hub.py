"""icl_core.storage.hub against a local fake Hub (tests/fake_hub.py): nothing here reaches huggingface.co."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from fake_hub import READ_TOKEN, WRITE_TOKEN, FakeHub
from safetensors.torch import load_file, save_file

from icl_core.errors import HubError
from icl_core.storage import hub, hub_publish
from icl_core.storage.runs import discover_runs, hub_registry_path, hub_runs
from icl_core.storage.snapshots import list_snapshots, load_model, read_manifest

REPO = "alice/tiny-run"


@pytest.fixture
def served(fake_hub: FakeHub, tiny_run_dir: Path) -> FakeHub:
    fake_hub.add_run(REPO, tiny_run_dir)
    return fake_hub


def _weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted(run_dir.glob("step_*.safetensors"))}


def _assert_same_run(local: Path, downloaded: Path) -> None:
    want, got = _weights(local), _weights(downloaded)
    assert want.keys() == got.keys() and want
    for name in want:
        assert want[name].keys() == got[name].keys()
        for key in want[name]:
            assert torch.equal(want[name][key], got[name][key]), f"{name}:{key} differs"


# -- download ---------------------------------------------------------------------------------------


def test_download_loads_like_a_shipped_run(served: FakeHub, tiny_run_dir: Path) -> None:
    seen: list[hub.DownloadProgress] = []
    threads: set[int] = set()

    def progress(p: hub.DownloadProgress) -> None:
        seen.append(p)
        threads.add(threading.get_ident())

    path = hub.download_run(REPO, progress=progress)

    assert path.is_relative_to(hub.hub_cache_dir())
    assert read_manifest(path)["run_name"] == "tiny"
    snapshots = list_snapshots(path)
    assert [s.step for s in snapshots] == [s.step for s in list_snapshots(tiny_run_dir)]
    for info in snapshots:
        load_model(info)
    _assert_same_run(tiny_run_dir, path)
    assert not any(path.glob("resume.*")), "resume state is not part of a published run"

    # Progress ends at 100 %; it comes from the download's own threads too (ui/relay.py brings it to a page's).
    assert threading.get_ident() in threads
    assert [p.stage for p in seen][0] == "connecting" and seen[-1].stage == "done" and seen[-1].fraction == 1.0
    assert any(p.stage == "downloading" and p.files_total > 0 for p in seen)

    refs = [r for r in discover_runs() if r.source == "hub"]
    assert [(r.name, r.path) for r in refs] == [(REPO, path)]
    [entry] = hub.downloaded_runs()
    assert (entry.repo_id, entry.revision, entry.commit, entry.run_name) == (REPO, "main", path.name, "tiny")
    assert json.loads(hub_registry_path().read_text())["runs"][f"{REPO}@main"]["path"] == str(path)


def test_accepts_hub_links_and_revisions(served: FakeHub, tiny_run_dir: Path) -> None:
    sha = served.repos[REPO].refs["main"]
    served.repos[REPO].refs["v1"] = sha
    assert hub.parse_repo_id(f"https://huggingface.co/{REPO}/tree/main") == REPO
    by_tag = hub.download_run(f" {REPO} ", revision="v1")
    by_sha = hub.download_run(REPO, revision=sha)
    assert by_tag == by_sha and by_tag.name == sha
    assert {r.label for r in hub_runs()} == {f"{REPO}@v1", f"{REPO}@{sha}"}


def test_second_load_comes_from_the_cache(served: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    first = hub.download_run(REPO)
    served.stop()  # connection refused from now on
    assert hub.download_run(REPO) == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.download_run(REPO) == first
    assert len(list_snapshots(first)) == 3


def test_offline_without_cache(served: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"Offline mode is on \(HF_HUB_OFFLINE=1\).*not been downloaded before"):
        hub.download_run(REPO)
    assert not served.requests


def test_no_network(served: FakeHub) -> None:
    served.stop()
    with pytest.raises(HubError, match="Cannot reach the Hub at http://127.0.0.1.*not in the local cache"):
        hub.download_run(REPO)


@pytest.mark.parametrize("bad", ["", "noslash", "a/b/c", "al ice/run", "-alice/run", "alice/run.", "alice/a--b"])
def test_invalid_repo_id(bad: str, fake_hub: FakeHub) -> None:
    with pytest.raises(HubError, match="not a valid Hub repo id: expected OWNER/NAME"):
        hub.download_run(bad)
    assert not fake_hub.requests


def test_invalid_revision(fake_hub: FakeHub) -> None:
    with pytest.raises(HubError, match="not a valid revision"):
        hub.download_run(REPO, revision="main branch")


def test_repo_not_found(served: FakeHub) -> None:
    with pytest.raises(HubError, match="Repository 'alice/nope' does not exist on 127.0.0.1"):
        hub.download_run("alice/nope")


def test_revision_not_found(served: FakeHub) -> None:
    with pytest.raises(HubError, match="'alice/tiny-run' has no branch, tag or commit 'v9'"):
        hub.download_run(REPO, revision="v9")


def test_private_repo_needs_a_token(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    fake_hub.add_run("alice/secret", tiny_run_dir, private=True)
    with pytest.raises(HubError, match="not found .* or it is private or gated: .*pass a token"):
        hub.download_run("alice/secret")
    with pytest.raises(HubError, match="rejected the token"):
        hub.download_run("alice/secret", token="hf_wrong")
    assert list_snapshots(hub.download_run("alice/secret", token=READ_TOKEN))


def test_token_from_environment(fake_hub: FakeHub, tiny_run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_run("alice/secret", tiny_run_dir, private=True)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert list_snapshots(hub.download_run("alice/secret"))


def test_gated_repo(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    fake_hub.add_run("alice/gated", tiny_run_dir, gated=True)
    with pytest.raises(HubError, match="'alice/gated' is a gated repository: accept its conditions"):
        hub.download_run("alice/gated", token=READ_TOKEN)


def test_repo_that_is_not_a_run(fake_hub: FakeHub) -> None:
    fake_hub.add_repo("bob/bert", {"README.md": b"# bert\n", "config.json": b"{}", "model.safetensors": b"x"})
    with pytest.raises(HubError, match="'bob/bert' is not an ICL Explorer run: it has no run.json manifest"):
        hub.download_run("bob/bert")
    assert not hub_runs()
    fake_hub.add_repo("bob/other", {"run.json": json.dumps({"format": "something-else"}).encode()})
    with pytest.raises(HubError, match="'bob/other': run.json is unusable: not an icl-explorer-run manifest"):
        hub.download_run("bob/other")


def test_pickles_are_never_downloaded(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    pickles = {"pytorch_model.bin": b"\x80\x04pickle", "step_000001.pt": b"\x80\x04", "opt.pkl": b"\x80"}
    fake_hub.add_run(REPO, tiny_run_dir, extra={**pickles, "resume.safetensors": b"x", "notes.txt": b"hi"})
    path = hub.download_run(REPO)
    for name in [*pickles, "resume.safetensors", "notes.txt"]:
        assert not fake_hub.fetched(name), f"{name} was requested"
        assert not (path / name).exists()
    assert fake_hub.fetched("step_000001.safetensors")


def test_corrupt_weights_name_the_file(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    good = (tiny_run_dir / "step_000001.safetensors").read_bytes()
    fake_hub.add_run(REPO, tiny_run_dir, extra={"step_000001.safetensors": good[: len(good) // 2]})
    with pytest.raises(
        HubError, match=r"'alice/tiny-run': step_000001.safetensors is unusable: .*truncated or corrupt"
    ):
        hub.download_run(REPO)
    assert not hub_runs(), "a run that does not load must not reach the run picker"


def test_weights_that_do_not_match_their_config(fake_hub: FakeHub, tiny_run_dir: Path, tmp_path: Path) -> None:
    state = load_file(tiny_run_dir / "step_000003.safetensors")
    save_file({**state, "extra.weight": torch.zeros(2)}, tmp_path / "w.safetensors")
    fake_hub.add_run(REPO, tiny_run_dir, extra={"step_000003.safetensors": (tmp_path / "w.safetensors").read_bytes()})
    with pytest.raises(HubError, match=r"step_000003.safetensors is unusable: weights do not match the config"):
        hub.download_run(REPO)


def test_missing_weights_and_no_snapshots(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    files = {p.name: p.read_bytes() for p in tiny_run_dir.iterdir() if p.name != "step_000003.safetensors"}
    fake_hub.add_repo("alice/holes", files)
    with pytest.raises(HubError, match="step_000003.safetensors is unusable: weights file is missing"):
        hub.download_run("alice/holes")
    fake_hub.add_repo("alice/empty", {"run.json": (tiny_run_dir / "run.json").read_bytes()})
    with pytest.raises(HubError, match="has a run.json manifest but no snapshots"):
        hub.download_run("alice/empty")


def test_hub_server_error(served: FakeHub) -> None:
    served.fail_with = 500
    with pytest.raises(HubError, match=r"answered HTTP 500 .*not in the local cache: try again later"):
        hub.download_run(REPO)
    assert served.backoff.waits == [1, 2, 4, 8, 8], "huggingface_hub retried as against the real Hub, then gave up"
    served.fail_with = None
    first = hub.download_run(REPO)
    served.fail_with = 503
    assert hub.download_run(REPO) == first  # a Hub outage falls back to the cache


def test_endpoint_that_is_not_a_hub(served: FakeHub) -> None:
    served.strip_headers = {"X-Repo-Commit"}
    with pytest.raises(HubError, match="does not answer like a Hugging Face Hub .*check HF_ENDPOINT"):
        hub.download_run(REPO)
    served.strip_headers = {"X-Error-Code"}
    served.fail_with = 404
    with pytest.raises(HubError, match="answered HTTP 404 .*check the repo id"):
        hub.download_run(REPO)


def test_damaged_registry_is_ignored(served: FakeHub) -> None:
    hub_registry_path().parent.mkdir(parents=True, exist_ok=True)
    hub_registry_path().write_text("{not json")
    assert hub_runs() == [] and all(r.source != "hub" for r in discover_runs())
    path = hub.download_run(REPO)
    assert [r.path for r in hub_runs()] == [path]
    assert hub.forget_run(REPO) and hub_runs() == [] and not hub.forget_run(REPO)


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path / "d"))
    assert hub.hub_cache_dir() == tmp_path / "d" / "hf_cache"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hub_cache_dir() == tmp_path / "c"


# -- publish ----------------------------------------------------------------------------------------


def test_publish_then_download_round_trip(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    url = hub_publish.publish_run(tiny_run_dir, "bob/induction-tiny", token=WRITE_TOKEN)
    assert url == f"{fake_hub.url}/bob/induction-tiny"
    published = set(fake_hub.files("bob/induction-tiny"))
    assert "resume.safetensors" not in published and "resume.json" not in published
    assert {"run.json", "train_log.jsonl", "README.md", "step_000003.safetensors"} <= published
    assert "icl-explorer" in fake_hub.files("bob/induction-tiny")["README.md"].decode()

    path = hub.download_run("bob/induction-tiny")
    _assert_same_run(tiny_run_dir, path)
    assert read_manifest(path) == read_manifest(tiny_run_dir)

    # Publishing again to the existing repo makes a new commit, which a new download picks up.
    hub_publish.publish_run(tiny_run_dir, "bob/induction-tiny", token=WRITE_TOKEN)
    assert hub.download_run("bob/induction-tiny").is_dir()


def test_publish_private(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    hub_publish.publish_run(tiny_run_dir, "bob/private-run", token=WRITE_TOKEN, private=True)
    assert fake_hub.repos["bob/private-run"].private
    with pytest.raises(HubError, match="private"):
        hub.download_run("bob/private-run")


def test_publish_needs_a_write_token(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    with pytest.raises(HubError, match="needs a token with write access"):
        hub_publish.publish_run(tiny_run_dir, "bob/x")
    with pytest.raises(HubError, match="rejected the token"):
        hub_publish.publish_run(tiny_run_dir, "bob/x", token=READ_TOKEN)
    assert "bob/x" not in fake_hub.repos


def test_publish_refuses_what_is_not_a_good_run(fake_hub: FakeHub, tiny_run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="no such folder"):
        hub_publish.publish_run(tmp_path / "missing", "bob/x", token=WRITE_TOKEN)
    with pytest.raises(HubError, match="has no run.json manifest"):
        hub_publish.publish_run(tmp_path, "bob/x", token=WRITE_TOKEN)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in tiny_run_dir.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "step_000000.safetensors").write_bytes(b"garbage")
    with pytest.raises(HubError, match="step_000000.safetensors is unusable"):
        hub_publish.publish_run(broken, "bob/x", token=WRITE_TOKEN)
    with pytest.raises(HubError, match="not a valid Hub repo id"):
        hub_publish.publish_run(tiny_run_dir, "bob", token=WRITE_TOKEN)
    assert not fake_hub.requests


def test_publish_offline(fake_hub: FakeHub, tiny_run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="Offline mode is on"):
        hub_publish.publish_run(tiny_run_dir, "bob/x", token=WRITE_TOKEN)


# -- CLI --------------------------------------------------------------------------------------------


def test_cli(served: FakeHub, tiny_run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hub_publish.main(["download", REPO]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert list_snapshots(path)
    assert hub_publish.main(["list"]) == 0
    assert f"{REPO}@main" in capsys.readouterr().out
    assert hub_publish.main(["publish", str(tiny_run_dir), "bob/cli-run", "--token", WRITE_TOKEN]) == 0
    assert capsys.readouterr().out.strip() == f"{served.url}/bob/cli-run"
    assert hub_publish.main(["download", "not a repo"]) == 1
    assert "error: 'not a repo' is not a valid Hub repo id" in capsys.readouterr().err


def test_a_page_sees_the_download_progress_in_its_own_thread(served: FakeHub, tiny_run_dir: Path) -> None:
    from ui.relay import run_relaying

    shown: list[tuple[int, str]] = []
    path = run_relaying(
        lambda report: hub.download_run(REPO, progress=report), lambda p: shown.append((threading.get_ident(), p.stage))
    )
    assert read_manifest(path)["run_name"] == "tiny"
    assert {t for t, _ in shown} == {threading.get_ident()}  # Streamlit's rule: draw from the script's thread
    assert shown[-1][1] == "done"
    with pytest.raises(HubError):  # the work's error is raised here, in the page's thread
        run_relaying(lambda report: hub.download_run("nobody/missing", progress=report), lambda p: None)
