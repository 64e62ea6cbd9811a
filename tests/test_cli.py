"""End to end: the real `convae` entry point on a tiny config and data made in a temp dir."""

import json

import numpy as np

from convae_jax.cli import main
from convae_jax.config import Config


def write_ratings(path, rng):
    lines = []
    for user in range(1, 41):
        for item in rng.choice(np.arange(1, 31), size=8, replace=False):
            lines.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t0")
    path.write_text("\n".join(lines) + "\n")


def test_train_evaluate_recommend_on_a_movielens_file(tmp_path, capsys):
    data_dir = tmp_path / "ml"
    data_dir.mkdir()
    write_ratings(data_dir / "u.data", np.random.default_rng(0))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--workdir", str(run),
                 "--preset", "testing", "--set", "train.max_epochs=3"]) == 0
    for name in ("run.json", "history.json", "metrics.json", "model/manifest.json", "model/params.npz"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 32 and 0 < metrics["test"]["rmse"] < 4
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 3 and all(np.isfinite(r["train_loss"]) for r in history)
    saved = Config.from_dict(json.loads((run / "run.json").read_text())["config"])
    assert saved.train.max_epochs == 3

    assert main(["evaluate", "--workdir", str(run)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    np.testing.assert_allclose(evaluation["test"]["rmse"], metrics["test"]["rmse"], rtol=1e-6)

    capsys.readouterr()
    assert main(["recommend", "--workdir", str(run), "--user", "7", "--mode", "enjoy", "-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top 5 'enjoy' items for user 7") and len(lines) == 6
    assert "expected_rating=" in lines[1]


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    (tmp_path / "u.data").write_text("1\t1\t3\t0\n1\t2\tfive\t0\n")
    code = main(["train", "--dataset", "ml-100k", "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "r"),
                 "--preset", "testing"])
    err = capsys.readouterr().err
    assert code == 2 and "u.data:2 [2]" in err and "not on the scale" in err


def test_cli_refuses_unknown_override(tmp_path, capsys):
    code = main(["train", "--workdir", str(tmp_path), "--set", "model.width=3"])
    assert code == 2 and "bad override" in capsys.readouterr().err
