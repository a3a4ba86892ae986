"""The linear probe (training/probe.py) on embeddings whose answers are known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerdemo.training.probe import (TRAINING_COLLECTION, Embedded, balanced_weights, choose_l2, fit_head,
                                       top1_by_collection)

CLASSES, WIDTH = 4, 8


def photos(seed: int, per_class: int, collection: str, shift: float) -> Embedded:
    """Class c lies along axis c; photos from elsewhere also carry ``shift`` along axis 4 + c (a feature the
    trained head never looked at), and their own axis c is weaker."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), per_class)
    x = rng.normal(0, 0.3, (len(labels), WIDTH))
    strength = 1.0 if collection == TRAINING_COLLECTION else 0.15
    x[np.arange(len(labels)), labels] += strength
    x[np.arange(len(labels)), 4 + labels] += shift
    # elsewhere, class c's photos also lean toward class c + 1's axis: the trained head gets them wrong
    if collection != TRAINING_COLLECTION:
        x[np.arange(len(labels)), (labels + 1) % CLASSES] += 0.5
    return Embedded(x, tuple((int(label),) for label in labels), (collection,) * len(labels))


def join(*parts: Embedded) -> Embedded:
    return Embedded(np.concatenate([p.embeddings for p in parts]), sum((p.accepted for p in parts), ()),
                    sum((p.collections for p in parts), ()))


def trained_head() -> tuple:
    """Reads axes 0-3 only: right on the training collection, mostly wrong elsewhere."""
    weight = torch.zeros(CLASSES, WIDTH, dtype=torch.float64)
    weight[:, :CLASSES] = 3.0 * torch.eye(CLASSES, dtype=torch.float64)
    return weight, torch.zeros(CLASSES, dtype=torch.float64)


def test_the_training_collection_weighs_its_share_and_classes_from_elsewhere_weigh_the_same():
    own = photos(0, 5, TRAINING_COLLECTION, 0.0)
    web = photos(1, 3, "web", 2.0)
    web = Embedded(web.embeddings[:-5], web.accepted[:-5], web.collections[:-5])  # class 3: 3 -> gone, class 2: 1 left
    weights = balanced_weights(join(own, web))
    assert weights[:len(own)].sum() == pytest.approx(0.7) and weights[len(own):].sum() == pytest.approx(0.3)
    half = balanced_weights(join(own, web), training_share=0.5)
    assert half[:len(own)].sum() == pytest.approx(0.5) and half[len(own):].sum() == pytest.approx(0.5)
    labels = np.asarray([a[0] for a in web.accepted])
    per_class = [weights[len(own):][labels == c].sum() for c in np.unique(labels)]
    assert np.allclose(per_class, per_class[0])  # 3, 3 and 1 photos: each class the same total
    assert np.allclose(balanced_weights(own), 1 / len(own))  # one collection alone: all of the weight


def test_the_probe_learns_the_photos_from_elsewhere_and_keeps_the_training_collection():
    train = join(photos(0, 30, TRAINING_COLLECTION, 0.0), photos(1, 30, "web", 2.0))
    select = join(photos(2, 30, TRAINING_COLLECTION, 0.0), photos(3, 30, "web", 2.0))
    before = top1_by_collection(select, trained_head())
    assert before[TRAINING_COLLECTION] > 0.9 and before["web"] < 0.5
    after = top1_by_collection(select, fit_head(train, trained_head(), l2=0.01))
    assert after["web"] > 0.9 and after[TRAINING_COLLECTION] > 0.9


def test_a_strong_pull_keeps_the_head_where_it_was():
    train = join(photos(0, 30, TRAINING_COLLECTION, 0.0), photos(1, 30, "web", 2.0))
    start = trained_head()
    loose, _ = fit_head(train, start, l2=0.001)
    held, _ = fit_head(train, start, l2=100.0)
    assert (held - start[0]).norm() < 0.05 * (loose - start[0]).norm()


def test_the_pull_is_chosen_on_the_selection_photos_and_the_head_kept_when_nothing_is_better():
    train = join(photos(0, 30, TRAINING_COLLECTION, 0.0), photos(1, 30, "web", 2.0))
    select = join(photos(2, 30, TRAINING_COLLECTION, 0.0), photos(3, 30, "web", 2.0))
    chosen, report = choose_l2(train, select, trained_head(), (100.0, 0.01))
    assert chosen is not None and chosen[0] == 0.01 and report["chosen_l2"] == 0.01
    assert [fit["l2"] for fit in report["fits"]] == [100.0, 0.01]
    assert report["fits"][1]["selection_mean"] > report["selection_mean_before"]
    # a selection the trained head already gets all right: no fit can do better, the head stays
    clear = Embedded(np.eye(CLASSES, WIDTH), tuple((c,) for c in range(CLASSES)), (TRAINING_COLLECTION,) * CLASSES)
    assert top1_by_collection(clear, trained_head()) == {TRAINING_COLLECTION: 1.0}
    kept, report = choose_l2(train, clear, trained_head(), (100.0,))
    assert kept is None and report["chosen_l2"] is None
