"""The comparison's grids: every model's one to three points, the first also its quick-mode point
(docs/results.md, Budget and selection). Conv4Rec's points name a preset of `presets.PRESETS`."""

from __future__ import annotations

# Mult-VAE/DAE: the notebook's defaults except 100 epochs (not 200) and batches of 100 users (not
# 500, which gives a few hundred steps in all on these small sets), β annealed over 2000 steps. Three
# points each, as EASE has: the notebook's (first, also the quick-mode point), then its regulariser
# lighter and heavier: the DAE's λ = 0.01 / batch ×0.1 and ×10, the VAE's β cap 0.2 -> 0.1 and 0.4.
# Cornac's VAECF keeps one point, the notebook's β.
MULT_EPOCHS = 100
MULT_BATCH_USERS = 100
MULT_DAE_L2_GRID = tuple(l2 / MULT_BATCH_USERS for l2 in (0.01, 0.001, 0.1))
MULT_VAE_CAP_GRID = (0.2, 0.1, 0.4)
EASE_L2_GRID = (200.0, 50.0, 1000.0)  # λ of EASE's points, the first also its quick-mode point
ITEM_MEAN_GRID = [{"shrinkage": 10.0}, {"shrinkage": 2.0}, {"shrinkage": 50.0}]
BIASES_GRID = [{"reg": 10.0}, {"reg": 3.0}, {"reg": 25.0}]
CORNAC_MF_GRID = [{"k": 20, "max_iter": 100, "lambda_reg": 0.1}, {"k": 10, "max_iter": 100, "lambda_reg": 0.05},
                  {"k": 20, "max_iter": 100, "lambda_reg": 0.2}]
AUTOREC_L2_GRID = (100.0, 30.0, 300.0)
# Our biased MF (ALS) and its IPS-weighted twin on random exposure: three (rank, reg) points from the
# gems study's 16-point grid, which picked (2, 10), (20, 3) and (5, 10) on Coat's three seeds.
MF_GRID = [{"rank": 5, "reg": 10.0}, {"rank": 2, "reg": 10.0}, {"rank": 20, "reg": 3.0}]

# Conv4Rec's explicit grid: three named presets, the same on every dataset, chosen on validation
# data of ML-100K u1 and Douban only (docs/results.md): the budgeted default, a lighter-L2
# heavier-dropout variant, and a narrow (d = 32) one with λ = 3; each with `model.row_offsets`
# (seed-0 validation RMSE on Douban 0.7555 -> 0.7336 for the narrow point, on u1 0.9017 -> 0.8896
# for the budgeted default), and each evaluated on the moving average of its weights (decay 0.995),
# which keeps improving longer, hence an 80-epoch cap and patience 8 (u1, `ratings_fast`: 0.8897 ->
# 0.8872 at epoch 45).
CONV4REC_EXPLICIT_EXTRAS = ("model.row_offsets=True", "train.weight_average=0.995", "train.max_epochs=80",
                            "train.patience=8")
CONV4REC_EXPLICIT_GRID = [{"preset": preset, "overrides": CONV4REC_EXPLICIT_EXTRAS}
                          for preset in ("ratings_fast", "ratings_dropout", "ratings_narrow")]
# The same three points with the ordinal rating head (docs/model.md, The model), reported as a model
# of its own: on seed-0 validation it was better than the categorical head at every point on u1
# (RMSE 0.8877 -> 0.8822 for `ratings_fast`) and mixed on Douban (0.7281 -> 0.7293 for `ratings_narrow`).
CONV4REC_ORDINAL_GRID = [{"preset": point["preset"], "overrides": point["overrides"] + ("model.rating_head='ordinal'",)}
                         for point in CONV4REC_EXPLICIT_GRID]

# Random exposure: the default config as it is (one point: it is the configuration the acceptance
# speaks of), and the explicit grids with the exposure-corrected rating term (docs/model.md,
# "Exposure-corrected rating term") at its default floor.
CONV4REC_DEFAULT_POINT = ({"preset": "default"},)
# A candidate for one default on every regime (docs/results.md, "One default"): the default with the
# ordinal head and the two overrides every explicit grid point carries (row offsets, the weights'
# moving average), the ordinal grid's best rows on u1, 90/10, ML-latest-small and Coat.
CONV4REC_CANDIDATE_DEFAULT = ({"preset": "default", "overrides": (
    "model.rating_head='ordinal'", "model.row_offsets=True", "train.weight_average=0.995")},)
INVERSE_PROPENSITY = "model.rating_propensity='inverse'"
# The same with the exposure-corrected rating term, which lowered the ordinal grid's test RMSE on Coat.
CONV4REC_CANDIDATE_DEFAULT_INVERSE_PROPENSITY = (
    {"preset": "default", "overrides": (*CONV4REC_CANDIDATE_DEFAULT[0]["overrides"], INVERSE_PROPENSITY)},)
CONV4REC_INVERSE_PROPENSITY_GRID = [{"preset": point["preset"], "overrides": point["overrides"] + (INVERSE_PROPENSITY,)}
                                    for point in CONV4REC_EXPLICIT_GRID]
CONV4REC_ORDINAL_INVERSE_PROPENSITY_GRID = [
    {"preset": point["preset"], "overrides": point["overrides"] + (INVERSE_PROPENSITY,)} for point in CONV4REC_ORDINAL_GRID]

# Conv4Rec's implicit points are named presets, each with three input dropouts, as the peers have
# three points: the preset's own (0.6) first (the point the tables reported alone before), then
# lighter and heavier, as the Mult grids vary their regulariser.
IMPLICIT_INPUT_DROPOUT_GRID = (0.6, 0.5, 0.7)


def _input_dropout_grid(preset: str, overrides: tuple[str, ...] = ()) -> list[dict]:
    return [{"preset": preset, "overrides": (*overrides, f"model.input_dropout={p}")} for p in IMPLICIT_INPUT_DROPOUT_GRID]


# The item rows' fold-in (on ratings and on clicks) with fewer, smaller steps than the default's 150
# of 0.05, which over-fit a new user's history (seed-0 validation users, item rows on ratings:
# NDCG@100 0.382 -> 0.479 on ML-100K and 0.144 -> 0.177 on Douban; the held-out ratings' RMSE
# 1.12 -> 0.93 on ML-100K).
ITEM_ROWS_FOLD_IN = ("eval.fold_in_steps=50", "eval.fold_in_learning_rate=0.005")
# The item rows on ratings swap the lighter dropout (0.5, which no dataset's item rows picked) for a
# lighter L2, 0.03: on ML-latest-small, where an item row holds about 7 ratings, L2 0.1 zeroed the
# encoder (every item the same code, so new users were ranked by popularity: seed-0 validation
# NDCG@100 0.244; 0.382 with L2 0.03 and 0.341 with 0.01; see train.EncoderCollapsed).
CONV4REC_RATINGS_GRID = [{"preset": "ratings_fast", "overrides": (*ITEM_ROWS_FOLD_IN, *point)}
                         for point in (("model.input_dropout=0.6",), ("model.input_dropout=0.7",),
                                       ("model.input_dropout=0.6", "train.l2=0.03"))]
# User rows read the moving average of their weights too: on Douban (seed 0) the validation users'
# NDCG@100 rose from 0.170 (epoch 34) to 0.199 (epoch 35) with it, the per-epoch curve far smoother.
CONV4REC_USER_ROWS_GRID = _input_dropout_grid("ratings_fast", (
    "model.orientation='user'", "train.weight_average=0.995", "train.max_epochs=80", "train.patience=8"))
# The same user rows with each new user's code refined on their own history, held near the
# encoder's code by a Gaussian prior of weight 1 (`predict.refine_codes`; the default 150 Adam steps
# of 0.05 converge). Chosen on the seed-0 validation users of the grid's first point (NDCG@100 by
# the weight ρ, converged: Douban 0.1991 with the encoder's code alone, 0.189 / 0.2005 / 0.2040 /
# 0.2013 / 0.2013 for ρ = 0.1 / 0.3 / 1 / 3 / 10; ML-100K, dropout 0.5, 0.5325 alone, 0.5368 /
# 0.5464 / 0.5434 for ρ = 0.3 / 1 / 3). The training and the epoch are the user rows' own
# (`entrants.fit_user_rows`): only the fold-in differs.
USER_ROWS_MAP_FOLD_IN = "eval.fold_in_code_prior=1.0"


def _with_map_fold_in(points: list[dict]) -> list[dict]:
    return [{**point, "overrides": (*point["overrides"], USER_ROWS_MAP_FOLD_IN)} for point in points]


CONV4REC_USER_ROWS_MAP_GRID = _with_map_fold_in(CONV4REC_USER_ROWS_GRID)
CONV4REC_CLICKS_GRID = _input_dropout_grid("clicks_fast", ITEM_ROWS_FOLD_IN)
# The clicks model in user rows: the user-rows ratings points on one channel, its epoch picked by the
# validation users' NDCG@100 as the ratings model's is; and the same with the MAP fold-in, so that
# the clicks alone and the ratings compare with the same fold-in.
CONV4REC_USER_ROWS_CLICKS_GRID = CONV4REC_USER_ROWS_GRID
CONV4REC_USER_ROWS_CLICKS_MAP_GRID = _with_map_fold_in(CONV4REC_USER_ROWS_CLICKS_GRID)

# Quick mode runs the tiny `testing` preset, in each grid's orientation and fold-in.
QUICK_ITEM_ROWS = ({"preset": "testing"},)
QUICK_USER_ROWS = ({"preset": "testing", "overrides": ("model.orientation='user'",)},)
QUICK_USER_ROWS_MAP = ({"preset": "testing", "overrides": ("model.orientation='user'", USER_ROWS_MAP_FOLD_IN)},)
QUICK_ORDINAL = ({"preset": "testing", "overrides": ("model.rating_head='ordinal'",)},)
QUICK_INVERSE_PROPENSITY = ({"preset": "testing", "overrides": (INVERSE_PROPENSITY,)},)
QUICK_ORDINAL_INVERSE_PROPENSITY = ({"preset": "testing", "overrides": ("model.rating_head='ordinal'", INVERSE_PROPENSITY)},)
