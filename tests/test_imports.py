"""Published runs imported in the background (icl_core.tasks.imports): a real worker process against the fake Hub,
with progress on disk, cancel, resume, a crash, and the Models page that drives it."""

from __future__ import annotations

import os
import signal
import time

import pytest
from fake_hub import FakeHub
from tl_fixtures import REPO, TOKENS, pth

from icl_core.errors import HubError
from icl_core.processes import CHILDREN
from icl_core.storage import published, tl_hub
from icl_core.storage.runs import discover_runs
from icl_core.storage.snapshots import list_snapshots
from icl_core.tasks import folder, imports

WAIT_S = 120


def wait_until_ended(info: imports.ImportInfo) -> imports.ImportInfo:
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        info = imports.read_import(info.import_dir)
        if not info.active:
            proc = CHILDREN.pop(int(folder.read_json_or_empty(info.import_dir / folder.PID_FILE)["pid"]), None)
            if proc is not None:
                proc.wait(timeout=30)
            return info
        time.sleep(0.2)
    raise AssertionError(f"the import did not end in {WAIT_S}s: {info}")


def test_an_import_runs_in_the_background_and_a_cancelled_one_resumes_where_it_stopped(
    fake_hub: FakeHub, tl_repo
) -> None:
    repo = tl_hub.list_repo(REPO)
    chosen = tl_hub.choose(repo, 3)
    started = imports.start_import(repo, 3)
    assert started.active and started.repo_id == REPO
    imports.cancel_import(started)  # the worker is still starting: it stops before its first download
    cancelled = wait_until_ended(started)
    log = (cancelled.import_dir / folder.LOG_FILE).read_text()
    assert cancelled.state == folder.CANCELLED and cancelled.resumable, (cancelled.error, log[-2000:])
    assert cancelled.done == 0 and cancelled.total == 3
    assert not any(fake_hub.fetched(c.path.split("/")[-1]) for c in chosen), "a cancel comes before the next download"
    assert not tl_hub.run_dir_for(repo).exists(), "a cancelled import leaves no half-run in the picker"

    # Cut short after two checkpoints (the third is unreadable): the resumed import keeps what it converted.
    files = dict(fake_hub.files(REPO))
    good = files[chosen[-1].path]
    fake_hub.add_repo(REPO, {**files, chosen[-1].path: pth({"model": {"nested": 1}})})
    failed = wait_until_ended(imports.resume_import(cancelled))
    assert failed.state == folder.FAILED and failed.done == 2, failed
    fake_hub.add_repo(REPO, {**files, chosen[-1].path: good})
    fake_hub.requests.clear()
    finished = wait_until_ended(imports.resume_import(failed))
    assert finished.state == folder.FINISHED, finished
    assert not any(fake_hub.fetched(c.path.split("/")[-1]) for c in chosen[:2]), "converted ones are kept"
    assert fake_hub.fetched(chosen[-1].path.split("/")[-1])
    assert finished.done == finished.total == 3
    snaps = list_snapshots(tl_hub.run_dir_for(repo))
    assert [s.tokens_seen for s in snaps] == [c.label for c in chosen]
    assert all(s.metrics.loss_curve and s.metrics.prefix_matching for s in snaps), "evaluated"
    assert any(r.path == tl_hub.run_dir_for(repo) for r in discover_runs())
    assert [i.key for i in imports.list_imports()] == [finished.key]

    # Redone with more checkpoints: the evaluated ones are kept (linked, not converted or evaluated again).
    before = {s.step: s.meta_path.read_text() for s in snaps}
    again = wait_until_ended(imports.start_import(tl_hub.list_repo(REPO), 4))
    assert again.state == folder.FINISHED, again
    after = {s.step: s for s in list_snapshots(tl_hub.run_dir_for(repo))}
    assert len(after) == 4 and all(after[step].meta_path.read_text() == text for step, text in before.items())


def test_a_bad_checkpoint_fails_the_import_with_its_name_and_a_killed_worker_is_reported(
    fake_hub: FakeHub, tl_repo
) -> None:
    files = dict(fake_hub.files(REPO))
    files[f"checkpoints/tokens_{TOKENS[-1]:012d}.pth"] = pth({"model": {"nested": 1}})
    fake_hub.add_repo(REPO, files)
    failed = wait_until_ended(imports.start_import(tl_hub.list_repo(REPO), 2))
    assert failed.state == folder.FAILED and failed.resumable
    assert f"tokens_{TOKENS[-1]:012d}.pth" in failed.error and "flat dict of tensors" in failed.error
    assert "Traceback" not in failed.error

    with pytest.raises(HubError, match="at least 2"):
        imports.start_import(tl_hub.list_repo(REPO), 1)
    started = imports.start_import(tl_hub.list_repo(REPO), 2)
    pid = int(folder.read_json_or_empty(started.import_dir / folder.PID_FILE)["pid"])
    os.killpg(pid, signal.SIGKILL)
    crashed = wait_until_ended(started)
    assert crashed.state == folder.FAILED and "stopped unexpectedly" in crashed.error


def test_the_models_page_looks_up_a_published_run_shows_its_size_and_imports_it(fake_hub: FakeHub, tl_repo) -> None:
    from conftest import open_page

    at = open_page("pages/models.py")
    options = at.selectbox(key="tl_preset").options  # as shown: "repo — what it is"
    assert all(any(o.startswith(repo_id) for o in options) for repo_id in published.PRESETS), options
    at.selectbox(key="tl_preset").set_value("another repository…").run()
    at.text_input(key="tl_repo").set_value("nobody/missing-repo").run()
    at.button(key="tl_look_up").click().run()
    assert not at.exception and at.error, "a missing repo is one clear message"
    at.text_input(key="tl_repo").set_value(REPO).run()
    at.button(key="tl_look_up").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    repo = tl_hub.list_repo(REPO)
    assert at.number_input(key="tl_n").value == tl_hub.default_count(repo), "the count follows the repo"
    assert not any("Session State API" in w.value for w in at.warning), "set from a callback, quietly"
    plan = next(i.value for i in at.info if REPO in i.value)
    assert "keeps" in plan and "min on 2 CPU cores" in plan and "config from config" in plan, plan
    at.number_input(key="tl_n").set_value(3).run()
    chosen = tl_hub.choose(repo, 3)
    label = at.button(key="tl_start").label
    assert tl_hub.hub.fmt_mb(repo.download_bytes(chosen)) in label and "3 checkpoints" in label, label
    assert tl_hub.hub.fmt_mb(repo.kept_bytes(chosen)) + " kept" in label, label
    assert not any(fake_hub.fetched(c.path.split("/")[-1]) for c in repo.checkpoints), "nothing large before the click"
    at.button(key="tl_start").click().run()
    assert not at.exception
    (started,) = imports.list_imports()
    wait_until_ended(started)
    at.run()
    assert not at.exception
    assert any("finished" in m.value for m in at.markdown), [m.value for m in at.markdown]
    name = next(r.name for r in discover_runs() if r.path == tl_hub.run_dir_for(repo))
    assert name in at.selectbox(key="models_pick").options
