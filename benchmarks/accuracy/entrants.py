"""The comparison's entrants: Conv4Rec and its peers, each a name, a grid and a run that fits it on
a split and returns (validation score, test metrics), scored by the library's protocol code."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from benchmarks.accuracy import grids
from benchmarks.accuracy.presets import conv4rec_config
from benchmarks.accuracy.splits import (
    CLICK_THRESHOLD,
    ExplicitSplit,
    StrongSplit,
    as_clicks,
)
from convae_jax import config as config_lib
from convae_jax.data.interactions import Interactions
from convae_jax.evaluate import (
    explicit_protocol,
    random_exposure_protocol,
    rating_protocol,
    strong_generalization_protocol,
)
from convae_jax.peers.autorec import AutoRecConfig, IAutoRec
from convae_jax.peers.biases import UserItemBiases
from convae_jax.peers.ease import EASE
from convae_jax.peers.ips_mf import fit_ips_mf, inverse_propensity_weights, popularity_activity_propensities
from convae_jax.peers.item_mean import ItemMeanShrunk
from convae_jax.peers.mf import BiasedMF, select_rating_scale
from convae_jax.peers.mult_vae import MultVAE, MultVAEConfig
from convae_jax.peers.popularity import Popularity
from convae_jax.predict import FittedModel
from convae_jax.rank import p_rating_at_least
from convae_jax.train import fit

NEW_USERS = "new-users"  # prefix of the implicit task's rating metrics (the held-out users' ratings)


@dataclasses.dataclass(frozen=True)
class Entrant:
    """One model of a table: a name, its grid, and `run(split, point, seed) -> (validation score,
    test metrics)`. Higher validation scores win (RMSE enters negated)."""

    name: str
    grid: tuple[dict, ...]
    run: Callable
    source: str  # whose code: "ours" or the third-party package and version


def has_cornac() -> bool:
    try:
        import cornac  # noqa: F401
    except ImportError:
        return False
    return True


def cornac_version() -> str:
    import cornac

    return cornac.__version__


# --- explicit entrants -------------------------------------------------------------------------------


def test_metrics(model, split: ExplicitSplit) -> dict:
    """The test metrics of an explicit setting: the random-exposure protocol where the test pairs
    were shown at random, else the explicit protocol (ratings, and Recall@20 for models that rank)."""
    if split.random_exposure:
        return random_exposure_protocol(model, split.test)
    return explicit_protocol(model, split.train, split.test, ks=(20,))


def _closed_form(fit_fn) -> Callable:
    """Run for a model without epochs: fit on fit_part for the validation score, refit on train."""
    def run(split: ExplicitSplit, point: dict, seed: int):
        score = -rating_protocol(fit_fn(split.fit_part, point, seed), split.validation)["rmse"]
        return score, test_metrics(fit_fn(split.train, point, seed), split)
    return run


def _run_mf(*, inverse_propensity: bool) -> Callable:
    """Run for biased MF (`peers.mf`), or with `inverse_propensity` IPS-weighted MF (`peers.ips_mf`):
    fitted on fit_part, its σ chosen by validation NLL, refitted on train with that σ. IPS-MF is
    selected by the self-normalised IPS estimate of validation RMSE, propensities from fit_part (as
    Schnabel et al. 2016 select), plain MF by validation RMSE."""
    fit_fn = fit_ips_mf if inverse_propensity else BiasedMF.fit

    def run(split: ExplicitSplit, point: dict, seed: int):
        model = fit_fn(split.fit_part, **point, seed=seed)
        v = split.validation
        weights = (inverse_propensity_weights(popularity_activity_propensities(split.fit_part, v.user, v.item))
                   if inverse_propensity else np.ones(v.nnz))
        error = (model.predict_ratings(v.user, v.item) - v.ratings) ** 2
        scale, _ = select_rating_scale(model, v)
        final = fit_fn(split.train, **point, seed=seed, rating_scale=scale)
        return -float(np.sqrt(np.sum(weights * error) / np.sum(weights))), test_metrics(final, split)
    return run


def _fit_item_mean(train: Interactions, point: dict) -> ItemMeanShrunk:
    return ItemMeanShrunk.fit(train, **point)


def _fit_biases(train: Interactions, point: dict) -> UserItemBiases:
    return UserItemBiases.fit(train, reg_user=point["reg"], reg_item=point["reg"])


def _run_autorec(split: ExplicitSplit, point: dict, seed: int):
    model = IAutoRec.fit(split.fit_part, validation=split.validation, input_data=split.train,
                         config=AutoRecConfig(seed=seed, **point))
    return -min(model.history), test_metrics(model, split)


def _run_conv4rec_explicit(split: ExplicitSplit, point: dict, seed: int):
    config = conv4rec_config(point["preset"], point.get("overrides", ()), seed=seed)
    model = fit(split.fit_part, config, validation=split.validation)
    best = min(r.validation["rmse"] for r in model.history)
    reading_train = FittedModel(config, model.params, split.train, model.history)
    metrics = test_metrics(reading_train, split)
    metrics["epochs"] = len(model.history)
    return -best, metrics


def _cornac_mf(train: Interactions, point: dict, seed: int):
    import cornac

    from convae_jax.peers.cornac_adapters import CornacRatingModel

    model = cornac.models.MF(k=point["k"], max_iter=point["max_iter"], learning_rate=0.01,
                             lambda_reg=point["lambda_reg"], use_bias=True, early_stop=False, verbose=False, seed=seed)
    return CornacRatingModel.fit(model, train, seed=seed)


def explicit_entrants(*, quick: bool, random_exposure: bool = False) -> list[Entrant]:
    """Rating models, each with a grid of at most three points (one in quick mode): the peers,
    Conv4Rec's grids, its default config and a candidate for one default (one point each, the same
    on every dataset). With `random_exposure`, also the models of that setting: biased MF,
    IPS-weighted MF and Conv4Rec with its exposure-corrected rating term (`grids`)."""
    def grid(points):
        return tuple(points[:1]) if quick else tuple(points)

    autorec_epochs = {"max_epochs": 5, "patience": 5} if quick else {"max_epochs": 200, "patience": 15}
    entrants = [
        Entrant("item-mean", grid(grids.ITEM_MEAN_GRID), _closed_form(lambda d, p, s: _fit_item_mean(d, p)), "ours"),
        Entrant("user+item-biases", grid(grids.BIASES_GRID), _closed_form(lambda d, p, s: _fit_biases(d, p)), "ours"),
        Entrant("I-AutoRec", grid([{"l2": l2, **autorec_epochs} for l2 in grids.AUTOREC_L2_GRID]), _run_autorec, "ours"),
        Entrant("conv4rec", grids.QUICK_ITEM_ROWS if quick else tuple(grids.CONV4REC_EXPLICIT_GRID),
                _run_conv4rec_explicit, "ours"),
        Entrant("conv4rec (ordinal head)", grids.QUICK_ORDINAL if quick else tuple(grids.CONV4REC_ORDINAL_GRID),
                _run_conv4rec_explicit, "ours"),
        Entrant("conv4rec (default config)", grids.QUICK_ITEM_ROWS if quick else grids.CONV4REC_DEFAULT_POINT,
                _run_conv4rec_explicit, "ours"),
        Entrant("conv4rec (candidate default)", grids.QUICK_ORDINAL if quick else grids.CONV4REC_CANDIDATE_DEFAULT,
                _run_conv4rec_explicit, "ours"),
        Entrant("conv4rec (candidate default + inverse propensity)", grids.QUICK_ORDINAL_INVERSE_PROPENSITY if quick
                else grids.CONV4REC_CANDIDATE_DEFAULT_INVERSE_PROPENSITY, _run_conv4rec_explicit, "ours"),
    ]
    if random_exposure:
        entrants[2:2] = [Entrant("biased-MF", grid(grids.MF_GRID), _run_mf(inverse_propensity=False), "ours"),
                         Entrant("IPS-MF", grid(grids.MF_GRID), _run_mf(inverse_propensity=True), "ours")]
        entrants += [
            Entrant("conv4rec (inverse propensity)", grids.QUICK_INVERSE_PROPENSITY if quick
                    else tuple(grids.CONV4REC_INVERSE_PROPENSITY_GRID), _run_conv4rec_explicit, "ours"),
            Entrant("conv4rec (ordinal head + inverse propensity)", grids.QUICK_ORDINAL_INVERSE_PROPENSITY if quick
                    else tuple(grids.CONV4REC_ORDINAL_INVERSE_PROPENSITY_GRID), _run_conv4rec_explicit, "ours")]
    if has_cornac():
        entrants.insert(2, Entrant("cornac-MF", grid(grids.CORNAC_MF_GRID), _closed_form(_cornac_mf),
                                   f"cornac {cornac_version()}"))
    return entrants


# --- implicit entrants -------------------------------------------------------------------------------


def ranking_run(fit_fn) -> Callable:
    """Run for an implicit model that reads clicks: `fit_fn(split, point, seed) -> (model, val_score
    or None)`; the model's `fold_in_scores(history)` scores held-out users from their fold-in
    clicks, which are also the items excluded from the ranking."""
    def run(split: StrongSplit, point: dict, seed: int):
        model, val_score = fit_fn(split, point, seed)
        c = split.clicks
        if val_score is None:
            val_score = strong_generalization_protocol(model.fold_in_scores(c.val_fold_in), fold_in=c.val_fold_in,
                                                       target=c.val_target)["ndcg@100"]
        test = strong_generalization_protocol(model.fold_in_scores(c.test_fold_in), fold_in=c.test_fold_in,
                                              target=c.test_target)
        return val_score, test
    return run


@dataclasses.dataclass(eq=False)
class PopularityFoldIn:
    """Popularity through the fold-in interface: every user gets the training counts."""

    model: Popularity

    def fold_in_scores(self, history: Interactions):
        return self.model.consumption_scores(np.unique(history.user))


@dataclasses.dataclass(eq=False)
class Conv4RecFoldIn:
    """A fitted Conv4Rec scoring held-out users through `FittedModel.fold_in`. `rank_by`:
    `consume` = log P(i | u); `like` = log P(i | u) + log P(rating >= τ | u, i), the probability
    that the next interaction is a click on i (only for a model trained on ratings)."""

    model: FittedModel
    rank_by: str = "consume"
    code_prior: float | None = None  # user rows' fold-in refinement; None: the model config's
    _folded: dict = dataclasses.field(default_factory=dict)

    def fold_in_scores(self, history: Interactions, *, rank_by: str | None = None):
        rank_by = rank_by or self.rank_by
        values = self.model.train.channel_values
        if id(history) not in self._folded:  # one fold-in per history, whatever the ranking
            clicks_only = values == (1.0,)  # trained on clicks: fold in on the same single channel
            self._folded[id(history)] = (history, self.model.fold_in(as_clicks(history) if clicks_only else history,
                                                                     code_prior=self.code_prior))
        for scores in self._folded[id(history)][1].score():
            if rank_by == "consume":
                yield scores.users, scores.log_p_consume
            else:
                liked = p_rating_at_least(scores.log_p_rating, values, CLICK_THRESHOLD)
                yield scores.users, scores.log_p_consume + np.log(np.maximum(liked, 1e-30))


def fit_user_rows(train: Interactions, config: config_lib.Config, *, val_fold_in: Interactions,
                  val_target: Interactions, rank_by: str) -> FittedModel:
    """User rows keep the epoch whose validation users rank best (NDCG@100), the rule Mult-DAE and
    Mult-VAE follow: their fold-in is just the encoder, cheap enough to score every epoch. A code
    prior (`eval.fold_in_code_prior`) is left out of that per-epoch score, where its refinement
    would cost more than the epoch (Douban, 2 CPU cores: 8.5 s for the 300 validation users, an
    epoch about 3 s), and applies to the returned model: with or without it, the same weights."""
    def negated_ndcg(snapshot: FittedModel, _) -> dict:
        scores = Conv4RecFoldIn(snapshot, rank_by, code_prior=0.0).fold_in_scores(val_fold_in)
        return {"neg_ndcg@100": -strong_generalization_protocol(scores, fold_in=val_fold_in, target=val_target)["ndcg@100"]}

    config = config.override(["train.select_metric='neg_ndcg@100'"])
    return fit(train, config, validation=val_fold_in, validation_metrics=negated_ndcg)


def fit_conv4rec_ratings(split: StrongSplit, point: dict, seed: int) -> Conv4RecFoldIn:
    """Conv4Rec trained on the full ratings at a grid point, ranking by `like`: user rows keep the
    epoch whose validation users rank best (`fit_user_rows`); item rows, whose fold-in is an
    optimisation of its own (too slow to run every epoch), stop early on held-out rating pairs."""
    config = conv4rec_config(point["preset"], point.get("overrides", ()), seed=seed)
    if config.model.orientation == "user":
        fitted = fit_user_rows(split.ratings_train, config, val_fold_in=split.val_ratings_fold_in,
                               val_target=split.clicks.val_target, rank_by="like")
    else:
        fitted = fit(split.ratings_train, config)
    return Conv4RecFoldIn(fitted, "like")


def run_conv4rec_ratings(split: StrongSplit, point: dict, seed: int):
    """Conv4Rec trained on the full ratings (`fit_conv4rec_ratings`), folded in from full
    ratings, ranked by `like` (headline) and by `consume` (reported as consume/…), both from one
    training and one fold-in."""
    model = fit_conv4rec_ratings(split, point, seed)
    fitted, c = model.model, split.clicks
    val_score = strong_generalization_protocol(model.fold_in_scores(split.val_ratings_fold_in),
                                               fold_in=split.val_ratings_fold_in, target=c.val_target)["ndcg@100"]
    test = strong_generalization_protocol(model.fold_in_scores(split.test_ratings_fold_in),
                                          fold_in=split.test_ratings_fold_in, target=c.test_target)
    consume = strong_generalization_protocol(model.fold_in_scores(split.test_ratings_fold_in, rank_by="consume"),
                                             fold_in=split.test_ratings_fold_in, target=c.test_target)
    test |= {f"consume/{k}": v for k, v in consume.items() if k != "n_users"}
    return val_score, test | new_user_ratings(fitted.fold_in(split.test_rating_history), split.test_rating_target)


def new_user_ratings(model, target: Interactions) -> dict:
    """Rating metrics of the held-out users' rating targets, prefixed `new-users/`: the explicit
    task for users the model never trained on, read from their rating history alone."""
    return {f"{NEW_USERS}/{k}": v for k, v in rating_protocol(model, target).items() if k != "n"}


def _new_user_rating_floor(fit_fn) -> Callable:
    """Run for a rating floor on the held-out users' ratings: `fit_fn(interactions, point)` is fitted
    on the training users' ratings plus the held-out users' rating history (a closed form, so
    refitting is its fold-in), scored on their rating targets; validation users select."""
    def run(split: StrongSplit, point: dict, seed: int):
        val_model = fit_fn(split.ratings_train.concat(split.val_rating_history), point)
        score = -rating_protocol(val_model, split.val_rating_target)["rmse"]
        test_model = fit_fn(split.ratings_train.concat(split.test_rating_history), point)
        return score, new_user_ratings(test_model, split.test_rating_target)
    return run


def fit_conv4rec_clicks(split: StrongSplit, point: dict, seed: int):
    """Conv4Rec on the clicks alone (one channel). User rows pick their epoch by the validation
    users' ranking; item rows have no rating validation, so their epoch count is fixed."""
    config = conv4rec_config(point["preset"], list(point.get("overrides", ())) + ["train.validation_fraction=0.0"],
                             seed=seed)
    c = split.clicks
    if config.model.orientation == "user":
        fitted = fit_user_rows(as_clicks(c.train), config, val_fold_in=as_clicks(c.val_fold_in),
                               val_target=c.val_target, rank_by="consume")
        return Conv4RecFoldIn(fitted, "consume"), None
    return Conv4RecFoldIn(fit(as_clicks(c.train), config), "consume"), None


def fit_ease(split: StrongSplit, point: dict, seed: int) -> EASE:
    """EASE fitted on the clicks at a grid point (closed form: the seed changes nothing)."""
    return EASE.fit(split.clicks.train, **point)


def fit_mult(variant: str):
    """`fit_fn(split, point, seed) -> (model, best validation NDCG@100)` of Mult-DAE ("dae") or
    Mult-VAE ("vae"), trained on the clicks."""
    def fit_fn(split: StrongSplit, point: dict, seed: int):
        c = split.clicks
        model = MultVAE.fit(c.train, val_fold_in=c.val_fold_in, val_target=c.val_target,
                            config=MultVAEConfig(variant=variant, seed=seed, **point))
        return model, max(model.history)
    return fit_fn


def _fit_cornac_implicit(kind: str):
    def fit_fn(split: StrongSplit, point: dict, seed: int):
        import cornac

        from convae_jax.peers.cornac_adapters import CornacFoldIn

        if kind == "ease":
            # posB=False: Steck's EASE; Cornac's default (True) also zeroes the negative weights.
            model = cornac.models.EASE(lamb=point["l2"], posB=False, verbose=False, seed=seed)
        else:
            model = cornac.models.VAECF(k=200, autoencoder_structure=[600], act_fn="tanh", likelihood="mult",
                                        n_epochs=point["epochs"], batch_size=point.get("batch", 500), learning_rate=1e-3,
                                        beta=point["beta"], seed=seed, verbose=False)
        return CornacFoldIn.fit(model, split.clicks.train, seed=seed), None
    return fit_fn


def implicit_entrants(*, quick: bool) -> list[Entrant]:
    """Strong-generalization models, each with a grid of at most three points (one in quick mode)."""
    def grid(points):
        return tuple(points[:1]) if quick else tuple(points)

    def conv4rec_grid(points, quick_points):
        return quick_points if quick else tuple(points)

    short = {"epochs": 3} if quick else {"epochs": grids.MULT_EPOCHS}
    mult = {"batch_users": grids.MULT_BATCH_USERS, **short}
    ease_grid = grid([{"l2": l2} for l2 in grids.EASE_L2_GRID])
    entrants = [
        Entrant("item-mean", grid(grids.ITEM_MEAN_GRID), _new_user_rating_floor(_fit_item_mean), "ours"),
        Entrant("user+item-biases", grid(grids.BIASES_GRID), _new_user_rating_floor(_fit_biases), "ours"),
        Entrant("popularity", ({},),
                ranking_run(lambda s, p, seed: (PopularityFoldIn(Popularity.fit(s.clicks.train)), None)), "ours"),
        Entrant("EASE", ease_grid, ranking_run(lambda s, p, seed: (fit_ease(s, p, seed), None)), "ours"),
        Entrant("Mult-DAE", grid([{"l2": l2, **mult} for l2 in grids.MULT_DAE_L2_GRID]), ranking_run(fit_mult("dae")), "ours"),
        Entrant("Mult-VAE", grid([{"anneal_cap": cap, "total_anneal_steps": 2000, **mult} for cap in grids.MULT_VAE_CAP_GRID]),
                ranking_run(fit_mult("vae")), "ours"),
        Entrant("conv4rec (ratings)", conv4rec_grid(grids.CONV4REC_RATINGS_GRID, grids.QUICK_ITEM_ROWS),
                run_conv4rec_ratings, "ours"),
        Entrant("conv4rec user rows (ratings)", conv4rec_grid(grids.CONV4REC_USER_ROWS_GRID, grids.QUICK_USER_ROWS),
                run_conv4rec_ratings, "ours"),
        Entrant("conv4rec user rows (ratings; MAP fold-in)",
                conv4rec_grid(grids.CONV4REC_USER_ROWS_MAP_GRID, grids.QUICK_USER_ROWS_MAP), run_conv4rec_ratings, "ours"),
        Entrant("conv4rec (clicks)", conv4rec_grid(grids.CONV4REC_CLICKS_GRID, grids.QUICK_ITEM_ROWS),
                ranking_run(fit_conv4rec_clicks), "ours"),
        Entrant("conv4rec user rows (clicks)", conv4rec_grid(grids.CONV4REC_USER_ROWS_CLICKS_GRID, grids.QUICK_USER_ROWS),
                ranking_run(fit_conv4rec_clicks), "ours"),
        Entrant("conv4rec user rows (clicks; MAP fold-in)",
                conv4rec_grid(grids.CONV4REC_USER_ROWS_CLICKS_MAP_GRID, grids.QUICK_USER_ROWS_MAP),
                ranking_run(fit_conv4rec_clicks), "ours"),
    ]
    if has_cornac():
        version = f"cornac {cornac_version()}"
        entrants.insert(2, Entrant("cornac-EASE", ease_grid, ranking_run(_fit_cornac_implicit("ease")), version))
        vaecf = ({"beta": 0.2, "epochs": 3 if quick else grids.MULT_EPOCHS, "batch": grids.MULT_BATCH_USERS},)
        entrants.insert(5, Entrant("cornac-VAECF", vaecf, ranking_run(_fit_cornac_implicit("vaecf")), version))
    return entrants
