"""Files in the data folder are not trusted: a metric holding NaN or inf is shown as n/a with a note, never as a
wrong figure; symbolic links (a snapshot file, a run folder) are refused with a message, never followed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import open_page, timeline_package

from icl_core.errors import CheckpointError
from icl_core.storage.runs import SHIPPED_DIR, discover_runs, refused_run_links
from icl_core.storage.snapshots import list_snapshots, scan_snapshots

KEEP = 6  # snapshots copied from the shipped run: enough for every chart, quick to read


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    shutil.copy(src / "run.json", dst / "run.json")
    for snap in list_snapshots(src)[-KEEP:]:
        for path in (snap.meta_path, snap.weights_path):
            shutil.copy(path, dst / path.name)
    return dst


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_a_nan_in_a_stored_metric_makes_it_n_a_with_a_note_not_a_wrong_figure(data_dir: Path) -> None:
    run = copy_run(SHIPPED_DIR / "attn2", data_dir / "runs" / "nanrun")
    last = list_snapshots(run)[-1]
    meta = json.loads(last.meta_path.read_text())
    assert max(max(row) for row in meta["metrics"]["prefix_matching"][1:]) > 0.5, "it has an induction head"
    meta["metrics"]["prefix_matching"][1][0] = float("nan")  # written by json as NaN, read back as nan
    meta["metrics"]["icl_score"] = float("inf")
    last.meta_path.write_text(json.dumps(meta))

    snap = list_snapshots(run)[-1]
    assert snap.metrics.non_finite == ("prefix_matching", "icl_score")
    assert snap.metrics.prefix_matching is None and snap.metrics.icl_score is None
    assert snap.metrics.loss_curve is not None, "the other metrics stay"
    expected = f"step {snap.step}: prefix_matching, icl_score stored with NaN or inf values, shown as n/a"
    assert scan_snapshots(run).notes == [expected]

    at = open_page("pages/phase_change.py", run="nanrun", step=snap.step)
    assert not at.exception
    package = timeline_package(at)  # the metric row, drawn by the page's timeline at each snapshot
    values = {k: v[package["index"]] for k, v in package["metrics"].items()}
    best = next(v for k, v in values.items() if k.startswith("Best induction head score"))
    icl = next(v for k, v in values.items() if k.startswith("ICL score") and k.endswith("code"))
    assert best == "n/a" and icl == "n/a", values
    assert any("NaN or inf" in w.value and "prefix" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_symlinked_snapshot_file_is_refused_and_named(data_dir: Path, tmp_path: Path) -> None:
    run = copy_run(SHIPPED_DIR / "attn1", data_dir / "runs" / "linked-files")
    first = list_snapshots(run)[0]
    outside = tmp_path / "elsewhere.json"
    shutil.move(first.meta_path, outside)
    first.meta_path.symlink_to(outside)
    scan = scan_snapshots(run)
    assert len(scan.snapshots) == KEEP - 1 and len(scan.errors) == 1
    assert "symbolic link" in scan.skipped[0] and first.meta_path.name in scan.skipped[0]
    with pytest.raises(CheckpointError, match="symbolic link"):
        list_snapshots(run)


def test_a_run_folder_linked_into_the_data_folder_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = copy_run(SHIPPED_DIR / "attn1", tmp_path / "not-data" / "somerun")
    (data_dir / "runs").mkdir(parents=True)
    (data_dir / "runs" / "linked").symlink_to(outside, target_is_directory=True)
    copy_run(SHIPPED_DIR / "attn1", data_dir / "runs" / "real")
    names = [r.name for r in discover_runs()]
    assert "real" in names and "linked" not in names
    assert refused_run_links() == [
        "runs/linked is a symbolic link: runs are read only from folders written in the data folder"
    ]
    at = open_page("pages/models.py")
    assert not at.exception
    assert any("runs/linked is a symbolic link" in w.value for w in at.warning), [w.value for w in at.warning]
