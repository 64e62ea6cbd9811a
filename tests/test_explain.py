"""Explanations of one (user, item) pair, `convae explain`, and the "why" of `convae recommend --mode gems`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from convae_jax.cli import main
from convae_jax.explain import explain, explain_scores
from convae_jax.io import load_model
from convae_jax.rank import ranking_scores, seen_mask

VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)


def test_explain_scores_by_hand():
    """4 items, P(consume) = (0.4, 0.3, 0.2, 0.1), item 0 seen; item 2's rating distribution is
    (0.1, 0.1, 0.2, 0.3, 0.3): E = 0.1 + 0.2 + 0.6 + 1.2 + 1.5 = 3.6, P(>= 4) = 0.6. Among the
    unseen items 1, 2, 3, item 2 is above one other and itself: percentile 2/3."""
    log_c = np.log([0.4, 0.3, 0.2, 0.1])
    log_r = np.log(np.tile([0.1, 0.1, 0.2, 0.3, 0.3], (4, 1)))
    seen = np.array([True, False, False, False])
    e = explain_scores(log_c, log_r, seen, 2, channel_values=VALUES, threshold=4.0, user_id="u7", item_id="i2")
    assert (e.user, e.item, e.seen) == ("u7", "i2", False)
    np.testing.assert_allclose([e.p_consume, e.consume_percentile, e.expected_rating, e.p_rating_at_least],
                               [0.2, 200 / 3, 3.6, 0.6], rtol=1e-12)
    np.testing.assert_allclose(e.p_rating, [0.1, 0.1, 0.2, 0.3, 0.3], rtol=1e-12)
    assert e.summary()["p_rating_5"] == pytest.approx(0.3)
    assert "percentile 67" in e.why("gems") and "50% cut" in e.why("gems") and "= 0.60" in e.why("gems")
    assert "cut" not in e.why("gems", gem_quantile=1.0)
    assert "expected rating 3.60" in e.why("enjoy") and "P(consume) = 0.2" in e.why("consume")
    seen_item = explain_scores(log_c, log_r, seen, 0, channel_values=VALUES, threshold=4.0)
    assert seen_item.seen and np.isnan(seen_item.consume_percentile) and "already seen" in seen_item.why("consume")


def write_ratings(path, rng):
    """40 users x 30 items, 8 random ratings each, in MovieLens 100K's u.data format."""
    lines = [f"{user}\t{item}\t{rng.integers(1, 6)}\t0" for user in range(1, 41)
             for item in rng.choice(np.arange(1, 31), size=8, replace=False)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run trained through the real CLI on a tiny config."""
    root = tmp_path_factory.mktemp("explain")
    (root / "ml").mkdir()
    write_ratings(root / "ml" / "u.data", np.random.default_rng(0))
    assert main(["train", "--dataset", "ml-100k", "--data-dir", str(root / "ml"), "--workdir", str(root / "run"),
                 "--preset", "testing", "--set", "train.max_epochs=2"]) == 0
    return root / "run"


def printed_numbers(text: str) -> dict:
    return {key: value for key, value in re.findall(r"^(\w+): (.+)$", text, flags=re.M)}


def test_cli_explain_prints_the_numbers_and_saves_the_bar_chart(run_dir, tmp_path, capsys):
    model = load_model(run_dir / "model")
    user, item = model.train.user_index("5"), model.train.item_index("17")
    png = tmp_path / "why.png"
    capsys.readouterr()
    assert main(["explain", "--workdir", str(run_dir), "--user", "5", "--item", "17", "--png", str(png)]) == 0
    printed = printed_numbers(capsys.readouterr().out)
    direct = explain(model, user, item)
    # The expected rating through a second path: per-pair rating distributions, not whole-catalogue scores.
    np.testing.assert_allclose(float(printed["expected_rating"]), model.expected_rating([user], [item])[0], rtol=1e-3)
    np.testing.assert_allclose(float(printed["p_consume"]), direct.p_consume, rtol=1e-3)
    np.testing.assert_allclose(sum(float(printed[f"p_rating_{v:g}"]) for v in VALUES), 1.0, rtol=1e-3)
    scores = next(model.score_users([user], batch=1))
    seen = seen_mask([user], model.train, model.train.n_items)[0]
    if not seen[item]:
        unseen = scores.log_p_consume[0][~seen]
        np.testing.assert_allclose(float(printed["consume_percentile"]),
                                   100 * np.mean(unseen <= scores.log_p_consume[0, item]), rtol=1e-3)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    assert main(["explain", "--workdir", str(run_dir), "--user", "5", "--item", "no-such-item"]) == 2
    assert "unknown item id" in capsys.readouterr().err


def test_cli_recommend_gems_says_why_next_to_each_item(run_dir, capsys):
    model = load_model(run_dir / "model")
    user = model.train.user_index("5")
    capsys.readouterr()
    assert main(["recommend", "--workdir", str(run_dir), "--user", "5", "--mode", "gems", "-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    items = [int(re.search(r"item=(\S+)", line).group(1)) for line in lines]
    assert len(items) == 4 and all("  why: unlikely to be found alone" in line for line in lines)
    percentiles = [float(re.search(r"consume_percentile=(\S+)", line).group(1)) for line in lines]
    assert all(p <= 50 for p in percentiles)  # the default cut keeps the bottom half, percentiles included
    scores = next(model.score_users([user], batch=1))
    seen = seen_mask([user], model.train, model.train.n_items)
    ranked = ranking_scores(scores.log_p_consume, scores.log_p_rating, seen, mode="gems",
                            channel_values=model.train.channel_values, threshold=4.0)
    expected = np.argsort(-ranked[0], kind="stable")[:4]
    assert items == [int(model.train.item_ids[i]) for i in expected]
    # The tilt knob reaches the ranking from the command line.
    assert main(["recommend", "--workdir", str(run_dir), "--user", "5", "--mode", "gems", "-k", "4",
                 "--gem-quantile", "1.0", "--gem-tilt", "2"]) == 0
    assert "why:" in capsys.readouterr().out
