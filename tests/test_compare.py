"""``python -m mmrl.compare``: the modality table from finished runs (a real tiny multirun, and bad input)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from mmrl.compare import find_runs, main, modality_tables, row_label, to_markdown
from tests.test_train import TINY, check_ok, run_train


def _fake_run(
    root: Path, name: str, seed: int, final: float, modalities: list[str], fusion: str = "film", planner: float | None = None
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    summary = {"env": "mmrl/Recommend-v0", "algo": "ppo", "fusion": fusion, "seed": seed, "total_timesteps": 1000,
               "final_return": final, "random_return": 1.0, "oracle_return": 11.0, "planner_return": planner}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    config = {"env": {"id": "mmrl/Recommend-v0", "options": {"image_size": 32}}, "algo": {"name": "ppo"},
              "extractor": {"fusion": fusion, "modalities": modalities}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_table_statistics_and_rows(tmp_path: Path) -> None:
    for seed, value in enumerate([9.0, 10.0, 11.0]):
        _fake_run(tmp_path, f"fused{seed}", seed, value, ["image", "text"])
    for seed, value in enumerate([2.0, 3.0]):
        _fake_run(tmp_path, f"image{seed}", seed, value, ["image"])
    _fake_run(tmp_path, "text0", 0, 1.5, ["text"], fusion="concat")
    (table,) = modality_tables(find_runs([tmp_path]))
    rows = {r["row"]: r for r in table["rows"]}
    assert list(rows) == ["image only (film)", "text only (concat)", "film"]  # ablations first
    assert rows["film"]["mean"] == pytest.approx(10.0) and rows["film"]["std"] == pytest.approx(1.0)
    assert rows["film"]["share_of_gap"] == pytest.approx(0.9) and rows["film"]["seeds"] == [0, 1, 2]
    assert rows["image only (film)"]["share_of_gap"] == pytest.approx(0.15)
    assert rows["text only (concat)"]["std"] == 0.0


def test_different_setups_never_share_a_row(tmp_path: Path) -> None:
    _fake_run(tmp_path, "a", 0, 5.0, ["image", "text"])
    other = _fake_run(tmp_path, "b", 1, 7.0, ["image", "text"])
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "total_timesteps": 2000}))
    assert len(modality_tables(find_runs([tmp_path]))) == 2


def test_bad_input_gives_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope: no such file or directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    run = _fake_run(tmp_path, "r", 0, 1.0, ["image", "text"])
    (run / "config.yaml").unlink()
    assert main([str(tmp_path)]) == 2
    assert f"{run / 'summary.json'}: no config.yaml beside it" in capsys.readouterr().err
    (run / "summary.json").write_text("{not json")
    assert main([str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"modalities must be a non-empty subset of \['image', 'text'\]; got \[\]"):
        row_label("film", [])


def test_multirun_to_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real Hydra multirun over seeds and modalities, then the table from its folder."""
    sweep = tmp_path / "sweep"
    args = ["--multirun", *TINY, "total_timesteps=128", "eval_every=0", "checkpoint_every=0", "seed=0,1",
            "extractor.modalities=[image],[image,text]", f"run_dir={sweep}/" + "${hydra:job.num}"]  # fmt: skip
    check_ok(run_train(args, tmp_path, timeout=300))
    runs = sorted(sweep.rglob("summary.json"))
    assert len(runs) == 4
    out = tmp_path / "table.md"
    assert main([str(sweep), "--out", str(out), "--json", str(tmp_path / "table.json")]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    (table,) = json.loads((tmp_path / "table.json").read_text())
    assert table["env"] == "mmrl/Recommend-v0" and table["oracle"] is not None
    rows = {r["row"]: r for r in table["rows"]}
    assert set(rows) == {"image only (film)", "film"} and all(r["seeds"] == [0, 1] for r in rows.values())
    fused = [
        json.loads(p.read_text())["final_return"]
        for p in runs
        if yaml.safe_load(p.with_name("config.yaml").read_text())["extractor"]["modalities"] == ["image", "text"]
    ]
    assert len(fused) == 2
    assert rows["film"]["mean"] == pytest.approx(statistics.mean(fused))
    assert "| film |" in printed and "| random |" in printed and "| oracle (myopic) |" in printed


def test_the_gap_is_measured_to_the_planner_where_runs_have_one(tmp_path: Path) -> None:
    for seed, value in enumerate([15.0, 16.0, 17.0]):
        _fake_run(tmp_path, f"fused{seed}", seed, value, ["image", "text"], planner=21.0)
    (table,) = modality_tables(find_runs([tmp_path]))
    assert table["reference"] == "planner" and table["planner"] == 21.0
    (row,) = table["rows"]
    assert row["share_of_gap"] == pytest.approx(0.75)
    low, high = row["ci95"]
    assert low < 16.0 < high and high - low == pytest.approx(2 * 4.303 * 1.0 / 3**0.5, rel=1e-3)  # t(2) interval
    markdown = to_markdown(table)
    assert "share of random→planner gap" in markdown and "| planner | 21.00 | - | 100% | - |" in markdown
    assert "| oracle (myopic) | 11.00 | - | 50% | - |" in markdown
