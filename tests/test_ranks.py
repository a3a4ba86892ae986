"""The taxonomy table, the roll-up up the ranks, the group-conditional rules and their fitting."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from flowerdemo.core.artifact import ModelLoadError, ModelMetadata
from flowerdemo.core.conformal import ConformalConfigError, ConformalSets
from flowerdemo.core.decision import decide
from flowerdemo.core.preprocess import PreprocessConfig
from flowerdemo.core.ranks import NO_ANSWER, PhotoGroups, Rank, RankRule, RollUp
from flowerdemo.core.taxonomy import GROUP_NAMES_FILE, TAXONOMY_FILE, Taxon, Taxonomy, TaxonomyError
from flowerdemo.training.fitting.ranks import (decreasing_fit, fit_group_sets, fit_rank_rule, fit_unknown_thresholds,
                                               lowest_threshold_at_accuracy)

from conftest import ROOT

CLASS_NAMES = tuple(json.loads((ROOT / "flowerdemo" / "assets" / "references" / "index.json").read_text()))


# ------------------------------------------------------------------------------------------------ the table


def test_the_table_covers_every_class_in_order_and_every_genus_has_one_family():
    taxonomy = Taxonomy.from_csv(class_names=CLASS_NAMES)
    assert taxonomy.class_names == CLASS_NAMES and len(taxonomy.taxa) == 102
    families = {}
    for taxon in taxonomy.taxa:
        assert families.setdefault(taxon.genus, taxon.family) == taxon.family
        assert taxon.scientific_name.split()[0] == taxon.genus
        assert taxon.scientific_rank == ("genus" if len(taxon.scientific_name.replace("×", "").split()) == 1 else "species")


def test_the_table_names_what_the_photos_show():
    taxonomy = Taxonomy.from_csv(class_names=CLASS_NAMES)
    by_class = {taxon.class_name: taxon for taxon in taxonomy.taxa}
    assert by_class["watercress"].genus == "Tropaeolum" and "nasturtium" in by_class["watercress"].common_name
    assert by_class["english marigold"].scientific_name == "Calendula officinalis"
    assert by_class["carnation"].genus == by_class["sweet william"].genus == "Dianthus"
    assert by_class["californian poppy"].family == by_class["corn poppy"].family == "Papaveraceae"


def test_every_group_name_belongs_to_a_genus_or_family_of_the_table():
    taxonomy = Taxonomy.from_csv(class_names=CLASS_NAMES)
    with open(GROUP_NAMES_FILE, newline="", encoding="utf-8") as handle:
        latin = [row["latin"] for row in csv.DictReader(handle)]
    assert latin and set(latin) <= set(taxonomy.genera) | set(taxonomy.families)
    assert taxonomy.group_names["Dianthus"] == "pinks"


def test_other_names_people_type_find_the_class():
    taxonomy = Taxonomy.from_csv(class_names=CLASS_NAMES)
    found = {query: taxonomy.class_names[taxonomy.find(query)[0]] for query in
             ("calendula", "California poppy", "nasturtium", "pink quill", "zonal geranium", "Dianthus barbatus")}
    assert found == {"calendula": "english marigold", "California poppy": "californian poppy",
                     "nasturtium": "watercress", "pink quill": "ball moss", "zonal geranium": "geranium",
                     "Dianthus barbatus": "sweet william"}
    assert taxonomy.find("  ") == [] and taxonomy.find("no such plant") == []


def test_a_genus_in_two_families_and_a_wrong_genus_are_refused():
    rose = Taxon("rose", "rose", "Rosa", "genus", "Rosa", "Rosaceae")
    with pytest.raises(TaxonomyError, match="two families"):
        Taxonomy((rose, Taxon("dog rose", "dog rose", "Rosa canina", "species", "Rosa", "Asteraceae")))
    with pytest.raises(TaxonomyError, match="first word"):
        Taxonomy((Taxon("x", "x", "Bellis perennis", "species", "Rosa", "Rosaceae"),))


def test_the_csv_must_list_every_class(tmp_path):
    with pytest.raises(TaxonomyError, match="no row for not a class"):
        Taxonomy.from_csv(TAXONOMY_FILE, class_names=CLASS_NAMES[:3] + ("not a class",))


# ------------------------------------------------------------------------------------------------ roll-up

TOY = Taxonomy((
    Taxon("carnation", "carnation", "Dianthus caryophyllus", "species", "Dianthus", "Caryophyllaceae"),
    Taxon("sweet william", "sweet william", "Dianthus barbatus", "species", "Dianthus", "Caryophyllaceae"),
    Taxon("corn poppy", "corn poppy", "Papaver rhoeas", "species", "Papaver", "Papaveraceae"),
    Taxon("californian poppy", "californian poppy", "Eschscholzia californica", "species", "Eschscholzia", "Papaveraceae"),
    Taxon("sunflower", "sunflower", "Helianthus annuus", "species", "Helianthus", "Asteraceae"),
), {"Dianthus": "pinks", "Papaveraceae": "poppy family"})
RULE = RankRule(thresholds=((0.8, 0.8, 0.8),))


def answer(row):
    return RULE.answers(np.asarray([row]), RollUp(TOY))[0]


def test_a_sure_species_is_named():
    got = answer([0.9, 0.05, 0.02, 0.02, 0.01])
    assert (got.rank, got.name, got.scientific_name) == (Rank.SPECIES, "carnation", "Dianthus caryophyllus")
    assert got.probability == pytest.approx(0.9)


def test_two_close_species_of_one_genus_give_the_genus_with_its_candidates():
    got = answer([0.48, 0.41, 0.05, 0.05, 0.01])
    assert (got.rank, got.name, got.scientific_name) == (Rank.GENUS, "pinks", "Dianthus")
    assert got.probability == pytest.approx(0.89) and got.classes == (0, 1)


def test_two_genera_of_one_family_give_the_family():
    got = answer([0.05, 0.05, 0.45, 0.44, 0.01])
    assert (got.rank, got.name, got.scientific_name, got.classes) == (Rank.FAMILY, "poppy family", "Papaveraceae", (2, 3))


def test_nothing_sure_enough_gives_no_answer():
    assert answer([0.3, 0.1, 0.2, 0.1, 0.3]) == NO_ANSWER


def test_a_one_species_genus_is_its_species_at_genus_rank_and_a_tie_is_stable():
    rule = RankRule(thresholds=((0.9, 0.5, 0.5),))
    got = rule.answers(np.asarray([[0.0, 0.0, 0.0, 0.0, 0.6] + []]), RollUp(TOY))[0]
    assert (got.rank, got.scientific_name, got.name) == (Rank.GENUS, "Helianthus", "Helianthus")
    tie = rule.answers(np.asarray([[0.5, 0.5, 0.0, 0.0, 0.0]]), RollUp(TOY))[0]
    assert (tie.rank, tie.scientific_name) == (Rank.GENUS, "Dianthus")


def test_each_group_has_its_own_thresholds():
    rule = RankRule(thresholds=((0.5, 0.5, 0.5), (0.99, 0.99, 0.99)))
    row = np.asarray([[0.7, 0.1, 0.1, 0.05, 0.05]] * 2)
    first, second = rule.answers(row, RollUp(TOY), groups=np.asarray([0, 1]))
    assert first.rank is Rank.SPECIES and second == NO_ANSWER


def test_photo_groups_cut_the_shift_score_at_the_edges():
    groups = PhotoGroups(weights=(0.0, 0.0, 1.0, 0.0), bias=0.0, edges=(0.2, 0.5))
    knn = np.asarray([0.1, 0.3, 0.6, 0.5])
    scores = groups.scores(np.ones((4, 2)), knn, np.ones(4))
    assert groups.assign(scores).tolist() == [0, 1, 2, 2]


# ------------------------------------------------------------------------------------------------ fitting


def test_the_rank_threshold_gives_the_promised_accuracy_on_a_pool_where_it_is_known():
    rng = np.random.default_rng(0)
    probability = rng.uniform(0, 1, 4000)
    right = rng.uniform(0, 1, 4000) < probability  # calibrated by construction: right with its probability
    threshold = lowest_threshold_at_accuracy(probability, right, 0.9)
    answered = probability >= threshold
    # answers above t are right (1 + t) / 2 of the time: 0.8 is the exact point, the bound asks a little more
    assert 0.8 <= threshold < 0.86 and right[answered].mean() >= 0.9
    assert lowest_threshold_at_accuracy(probability, np.zeros(4000, bool), 0.9) > 1


def test_a_local_target_stops_the_rank_where_the_answers_at_its_edge_turn_wrong():
    # 1,000 sure answers, all right, above 0.5; below, 600 answers right a third of the time: the average of
    # all answers down to about 0.3 is still above 0.8, so the marginal rule alone opens the rank deep into them
    rng = np.random.default_rng(1)
    probability = np.concatenate([rng.uniform(0.5, 1.0, 1000), rng.uniform(0.2, 0.5, 600)])
    right = np.concatenate([np.ones(1000, bool), rng.uniform(0, 1, 600) < 1 / 3])
    marginal = lowest_threshold_at_accuracy(probability, right, 0.8)
    local = lowest_threshold_at_accuracy(probability, right, 0.8, local_accuracy=0.7)
    assert marginal < 0.4 and right[probability >= marginal].mean() >= 0.8
    assert 0.45 <= local <= 0.55  # stops at the edge of the sure answers
    assert right[(probability >= local) & (probability < local + 0.05)].mean() >= 0.7


def test_the_decreasing_fit_pools_adjacent_violators():
    fitted = decreasing_fit(np.asarray([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], float))
    assert np.allclose(fitted, [1, 1, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 0, 0])
    assert np.all(np.diff(fitted) <= 0) and fitted.sum() == pytest.approx(5.0)  # monotone, same mass
    assert decreasing_fit(np.zeros(0)).size == 0


def synthetic_pool(seed=0, n=3000):
    """Two groups of photos: group 0 easy (the true class gets most of the mass), group 1 hard."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 2, n)
    labels = rng.integers(0, 5, n)
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), labels] += np.where(groups == 0, 4.0, 2.0)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities, tuple((int(label),) for label in labels), groups


def test_rank_rule_fitted_per_group_holds_its_accuracy_in_each_group_on_new_photos():
    probabilities, accepted, groups = synthetic_pool(0)
    rule = fit_rank_rule(probabilities, accepted, groups, RollUp(TOY), accuracy=(0.9, 0.9, 0.9))
    assert rule.thresholds[0][0] < rule.thresholds[1][0]  # the easy group answers at species rank more readily
    test_probabilities, test_accepted, test_groups = synthetic_pool(1)
    answers = rule.answers(test_probabilities, RollUp(TOY), test_groups)
    for group in (0, 1):
        rows = [i for i in range(len(answers)) if test_groups[i] == group and answers[i].rank is not None]
        right = [bool(set(answers[i].classes) & set(test_accepted[i])) for i in rows]
        assert len(rows) > 100 and np.mean(right) >= 0.87


@pytest.mark.parametrize("method", ["raps", "lac"])
def test_mondrian_sets_cover_each_group_at_the_level(method):
    probabilities, accepted, groups = synthetic_pool(0)
    base = ConformalSets(level=0.9, qhat=0.5, penalty=0.1 if method == "raps" else 0.0, method=method)
    sets = fit_group_sets(base, probabilities, accepted, groups, 2)
    test_probabilities, test_accepted, test_groups = synthetic_pool(1)
    predicted = sets.sets(test_probabilities, test_groups)
    size = {group: np.mean([len(predicted[i]) for i in np.flatnonzero(test_groups == group)]) for group in (0, 1)}
    assert size[0] < size[1]  # the easy group gets smaller sets
    for group in (0, 1):
        rows = np.flatnonzero(test_groups == group)
        coverage = np.mean([test_accepted[i][0] in predicted[i] for i in rows])
        # the hard group is covered at the level, not above it; the easy one's singletons already cover more
        assert 0.87 <= coverage and (group == 0 or coverage <= 0.94)
    if method == "lac":  # sets of one where one is enough (RAPS: a sure photo's own mass inflates its score)
        assert size[0] < 1.1
    one_threshold = base.sets(test_probabilities[:5])
    assert all(len(s) >= 1 for s in one_threshold)


def test_lac_sets_are_smaller_than_raps_at_the_same_coverage_and_older_rules_stay_raps():
    probabilities, accepted, groups = synthetic_pool(0)
    test_probabilities, test_accepted, _ = synthetic_pool(1)
    figures = {}
    for method, penalty in (("raps", 0.01), ("lac", 0.0)):
        rule = fit_group_sets(ConformalSets(level=0.9, qhat=0.5, penalty=penalty, method=method), probabilities,
                              accepted, np.zeros(len(accepted), int), 1)
        predicted = rule.sets(test_probabilities, np.zeros(len(test_accepted), int))
        figures[method] = (np.mean([a[0] in p for p, a in zip(predicted, test_accepted)]),
                           np.mean([len(p) for p in predicted]))
    assert figures["lac"][0] >= 0.87 and figures["raps"][0] >= 0.87
    assert figures["lac"][1] < figures["raps"][1]
    older = {"level": 0.9, "qhat": 0.8, "penalty": 0.01, "k_reg": 1}  # no "method": what format 2 wrote first
    assert ConformalSets.from_dict(older).method == "raps"
    with pytest.raises(ConformalConfigError, match="must be one of lac, raps, got 'aps'"):
        ConformalSets.from_dict({**older, "method": "aps"})


def test_unknown_thresholds_keep_each_groups_known_flowers():
    scores = np.concatenate([np.linspace(0, 1, 100), np.linspace(1, 2, 100), [5.0] * 10])
    groups = np.concatenate([np.zeros(100), np.ones(100), np.zeros(10)]).astype(int)
    is_unknown = np.concatenate([np.zeros(200, bool), np.ones(10, bool)])
    low, high = fit_unknown_thresholds(scores, is_unknown, groups, 2, (0.01, 0.10))
    assert (scores[:100] > low).mean() <= 0.01 and (scores[100:200] > high).mean() <= 0.10
    assert (scores[200:] > low).all()


# ------------------------------------------------------------------------------------------------ artifact


def metadata(**extra) -> ModelMetadata:
    return ModelMetadata(class_names=TOY.class_names, preprocess=PreprocessConfig(), arch="toy", **extra)


def test_the_taxonomy_and_rules_round_trip_through_the_metadata():
    groups = PhotoGroups(weights=(0.1, 0.2, 0.3, 0.4), bias=-0.5, edges=(0.0,))
    made = metadata(taxonomy=TOY, photo_groups=groups, ranks=RankRule(thresholds=((0.8, 0.7, 0.6), (0.9, 0.9, 0.9))))
    back = ModelMetadata.from_dict(json.loads(made.to_json()))
    assert back.taxonomy == TOY and back.photo_groups == groups and back.ranks == made.ranks


def test_rules_with_the_wrong_number_of_groups_or_no_taxonomy_are_refused():
    groups = PhotoGroups(weights=(0.1, 0.2, 0.3, 0.4), bias=0.0, edges=(0.0,))
    data = metadata(taxonomy=TOY, photo_groups=groups, ranks=RankRule(thresholds=((0.8, 0.7, 0.6),))).to_dict()
    with pytest.raises(ModelLoadError, match="one entry per photo group"):
        ModelMetadata.from_dict(data)
    data = metadata(ranks=RankRule(thresholds=((0.8, 0.7, 0.6),))).to_dict()
    with pytest.raises(ModelLoadError, match="needs the taxonomy"):
        ModelMetadata.from_dict(data)


def test_an_old_model_without_a_taxonomy_answers_at_species_rank():
    old = metadata()
    decided = decide(old, np.log([[0.1, 0.6, 0.1, 0.1, 0.1]]), np.ones((1, 4)))
    assert decided.answers[0].rank is Rank.SPECIES and decided.answers[0].name == "sweet william"
    assert decided.answers[0].scientific_name is None
    assert decided.answers[0].to_dict() == {"rank": "species", "name": "sweet william", "scientific_name": None,
                                            "probability": pytest.approx(0.6)}


def test_the_not_right_list_finds_a_species_by_the_names_people_type():
    from flowerdemo.ui.feedback import species_choices

    choices = dict((value, label) for label, value in species_choices(CLASS_NAMES, Taxonomy.from_csv(class_names=CLASS_NAMES)))
    for typed, value in (("calendula", "english marigold"), ("california poppy", "californian poppy"),
                         ("nasturtium", "watercress"), ("pink quill", "ball moss"), ("zonal geranium", "geranium")):
        assert typed in choices[value].casefold(), (typed, choices[value])
    assert len(choices) == 102 + 2  # every class once, plus "another species" and "not a flower"
    plain = dict((value, label) for label, value in species_choices(CLASS_NAMES))
    assert plain["watercress"] == "watercress"  # a model without a taxonomy lists its class names as they are


# ------------------------------------------------------------------------------------------------ wording


def page_text(answer, verdict="species", prediction_set=("carnation", "sweet william")):
    from flowerdemo.serve.predict import Prediction
    from flowerdemo.ui.presenters import verdict_markdown

    top = (("carnation", 0.48), ("sweet william", 0.41), ("corn poppy", 0.06), ("californian poppy", 0.04),
           ("sunflower", 0.01))
    prediction = Prediction(top_k=top, class_indices=(0, 1, 2, 3, 4), verdict=verdict, prediction_set=prediction_set,
                            answer=answer, taxa=TOY.taxa)
    return verdict_markdown(prediction, 0.95)


def test_the_page_names_each_rank_with_its_scientific_name():
    roll = RollUp(TOY)
    species = page_text(roll.answer([0.9, 0.05, 0.02, 0.02, 0.01], Rank.SPECIES, 0), prediction_set=("carnation",))
    assert species.startswith("### Carnation (*Dianthus caryophyllus*)\n90.0% likely")
    genus = page_text(roll.answer([0.48, 0.41, 0.06, 0.04, 0.01], Rank.GENUS, roll.names[Rank.GENUS].index("Dianthus")))
    assert genus.startswith("### Pinks (*Dianthus*): not sure which species")
    assert "carnation 48.0%, sweet william 41.0%" in genus and "Sure of the genus (89.0%)" in genus
    family = page_text(roll.answer([0.05, 0.05, 0.45, 0.44, 0.01], Rank.FAMILY, roll.names[Rank.FAMILY].index("Papaveraceae")))
    assert family.startswith("### Poppy family (*Papaveraceae*): not sure which species")
    assert "corn poppy 6.0%, californian poppy 4.0%" in family
    unsure = page_text(NO_ANSWER)
    assert unsure.startswith("### Not sure\n")
    assert "carnation (*Dianthus caryophyllus*), sweet william (*Dianthus barbatus*)." in unsure
    # a set of one (nothing cleared the set's threshold; a set is never empty) under "not sure": no claim that it
    # holds the right species, the likeliest species with their probabilities instead
    alone = page_text(NO_ANSWER, prediction_set=("carnation",))
    assert alone.startswith("### Not sure\n") and "Candidates that hold" not in alone
    assert "Likeliest: carnation (*Dianthus caryophyllus*) 48.0%, sweet william (*Dianthus barbatus*) 41.0%" in alone


def test_a_flower_it_does_not_know_gets_the_family_it_is_sure_of_as_a_hint():
    roll = RollUp(TOY)
    family = roll.answer([0.05, 0.05, 0.45, 0.44, 0.01], Rank.FAMILY, roll.names[Rank.FAMILY].index("Papaveraceae"))
    text = page_text(family, verdict="unknown_species", prediction_set=())
    assert text.startswith("### A flower I don't know") and "Its family is likely poppy family (*Papaveraceae*)" in text
    assert "Its family" not in page_text(NO_ANSWER, verdict="unknown_species", prediction_set=())
