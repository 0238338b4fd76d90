"""Error comparison: plain-loop references, known differences detected, null populations not."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ckatlas.analysis import (
    ErrorComparison,
    Population,
    class_correct_counts,
    compare_populations,
    load_class_groups,
    load_predictions,
    mean_squared_difference,
    per_example_accuracy,
)
from ckatlas.errors import UserInputError
from ckatlas.report import plot_class_differences, plot_example_scatter

NUM_CLASSES = 10

# -- simulated populations ----------------------------------------------------------------------


def simulate(num_models: int, rng: np.random.Generator, difficulty: np.ndarray, labels: np.ndarray,
             name: str = "") -> Population:
    """Models that are right on example n with probability difficulty[n], independently."""
    n = len(labels)
    correct = rng.random((num_models, n)) < difficulty[None, :]
    wrong = (labels[None, :] + rng.integers(1, NUM_CLASSES, (num_models, n))) % NUM_CLASSES
    preds = np.where(correct, labels[None, :], wrong)
    return Population(preds, labels, NUM_CLASSES, [f"{name}{i}" for i in range(num_models)], name)


def task(seed: int, n: int = 1000) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    return rng, labels, rng.beta(4.0, 1.0, n)  # probability that a model gets each example right


# -- plain-loop references ----------------------------------------------------------------------


def test_per_example_accuracy_and_class_counts_match_loops() -> None:
    rng, labels, difficulty = task(0, n=200)
    pop = simulate(5, rng, difficulty, labels)
    acc = per_example_accuracy(pop.correct)
    for n in range(200):
        assert acc[n] == sum(pop.predictions[m, n] == labels[n] for m in range(5)) / 5
    counts = class_correct_counts(pop.correct, labels, NUM_CLASSES)
    for m in range(5):
        for c in range(NUM_CLASSES):
            assert counts[m, c] == sum(1 for n in range(200) if labels[n] == c and pop.predictions[m, n] == c)


def test_mean_squared_difference_matches_loop() -> None:
    rng = np.random.default_rng(3)
    correct = rng.random((7, 50)) < 0.7
    assignments = rng.random((300, 7)).argsort(1) < 3
    fast = mean_squared_difference(correct, assignments)
    for row, in_a in enumerate(assignments):
        acc_a = [np.mean([correct[m, n] for m in range(7) if in_a[m]]) for n in range(50)]
        acc_b = [np.mean([correct[m, n] for m in range(7) if not in_a[m]]) for n in range(50)]
        assert fast[row] == pytest.approx(np.mean([(x - y) ** 2 for x, y in zip(acc_a, acc_b)]))


def test_exact_permutation_p_value_matches_enumeration() -> None:
    rng, labels, difficulty = task(1, n=300)
    a, b = simulate(3, rng, difficulty, labels), simulate(4, rng, difficulty**2, labels)
    res = compare_populations(a, b)
    pooled = np.concatenate([a.correct, b.correct]).astype(float)

    def d(group_a: list[int]) -> float:
        group_b = [m for m in range(7) if m not in group_a]
        return float(np.mean((pooled[group_a].mean(0) - pooled[group_b].mean(0)) ** 2))

    null = [d(list(g)) for g in itertools.combinations(range(7), 3)]
    observed = d([0, 1, 2])
    assert res.examples.exact and res.examples.num_permutations == 35
    assert res.examples.statistic == pytest.approx(observed)
    assert res.examples.p_value == pytest.approx(np.mean([x >= observed - 1e-12 for x in null]))
    assert res.examples.null_mean == pytest.approx(np.mean(null))
    assert res.examples.min_p_value == pytest.approx(np.mean([x >= max(null) - 1e-12 for x in null]))
    assert res.examples.min_p_value == pytest.approx(1 / 35)  # unequal sizes: one assignment attains the maximum
    assert "warning" not in res.summary()
    equal = compare_populations(a, simulate(3, rng, difficulty, labels))
    assert equal.examples.min_p_value == pytest.approx(2 / 20)  # a split and its mirror image tie
    assert "smallest attainable p is 0.1" in equal.summary()


def test_sampled_permutations_are_seeded() -> None:
    rng, labels, difficulty = task(2, n=300)
    a, b = simulate(8, rng, difficulty, labels), simulate(8, rng, difficulty, labels)
    r1 = compare_populations(a, b, num_permutations=500, seed=4)
    r2 = compare_populations(a, b, num_permutations=500, seed=4)
    r3 = compare_populations(a, b, num_permutations=500, seed=5)
    assert not r1.examples.exact and r1.examples.num_permutations == 500
    assert r1.examples.p_value == r2.examples.p_value != r3.examples.p_value
    assert 1 / 501 <= r1.examples.p_value <= 1


def test_class_statistics_are_scipys_and_statsmodels() -> None:
    rng, labels, difficulty = task(4, n=500)
    a, b = simulate(5, rng, difficulty, labels), simulate(6, rng, difficulty, labels)
    res = compare_populations(a, b)
    acc_a = [[np.mean(a.predictions[m][labels == c] == c) for c in range(NUM_CLASSES)] for m in range(5)]
    acc_b = [[np.mean(b.predictions[m][labels == c] == c) for c in range(NUM_CLASSES)] for m in range(6)]
    for c in range(NUM_CLASSES):
        ref = stats.ttest_ind([r[c] for r in acc_a], [r[c] for r in acc_b], equal_var=False)
        assert res.classes.t[c] == pytest.approx(ref.statistic)
        assert res.classes.p_value[c] == pytest.approx(ref.pvalue)
        assert res.classes.accuracy_a[c] == pytest.approx(np.mean([r[c] for r in acc_a]))
    reject, corrected, _, _ = multipletests(res.classes.p_value, alpha=0.05, method="holm-sidak")
    np.testing.assert_allclose(res.classes.p_corrected, corrected)
    np.testing.assert_array_equal(res.classes.significant, reject)


def test_group_accuracy_pools_the_groups_examples() -> None:
    rng, labels, difficulty = task(5, n=400)
    a, b = simulate(4, rng, difficulty, labels), simulate(4, rng, difficulty, labels)
    names = [f"c{k}" for k in range(NUM_CLASSES)]
    groups = {"low": ["c0", "c1", 2], "high": [7, 8, 9]}
    res = compare_populations(a, b, class_groups=groups, class_names=names)
    assert res.groups.names == ["low", "high"] and res.groups.members == [[0, 1, 2], [7, 8, 9]]
    in_low = np.isin(labels, [0, 1, 2])
    per_model = [np.mean(a.predictions[m][in_low] == labels[in_low]) for m in range(4)]
    assert res.groups.accuracy_a[0] == pytest.approx(np.mean(per_model))
    assert res.groups.num_examples.tolist() == [int(in_low.sum()), int(np.isin(labels, [7, 8, 9]).sum())]
    per_model_b = [np.mean(b.predictions[m][in_low] == labels[in_low]) for m in range(4)]
    assert res.groups.t[0] == pytest.approx(stats.ttest_ind(per_model, per_model_b, equal_var=False).statistic)


# -- known differences found, null populations not ----------------------------------------------


def test_population_wrong_on_chosen_classes_is_detected() -> None:
    rng, labels, difficulty = task(6)
    a = simulate(6, rng, difficulty, labels, "wide")
    worse = difficulty.copy()
    worse[np.isin(labels, [2, 7])] -= 0.3
    b = simulate(6, rng, np.clip(worse, 0, 1), labels, "deep")
    res = compare_populations(a, b, class_groups={"has_2_or_7": [2, 7], "rest": [0, 1, 3, 4]})
    assert res.examples.p_value < 0.05
    assert np.flatnonzero(res.classes.significant).tolist() == [2, 7]
    assert (res.classes.difference[[2, 7]] > 0.2).all()
    assert res.groups.significant.tolist() == [True, False]


def test_different_errors_at_equal_accuracy_are_detected() -> None:
    # B is worse on some examples and better on as many others: same accuracy, other errors.
    rng, labels, difficulty = task(7)
    swapped = difficulty.copy()
    order = rng.permutation(len(labels))
    swapped[order[:200]], swapped[order[200:400]] = difficulty[order[200:400]], difficulty[order[:200]]
    a, b = simulate(6, rng, difficulty, labels), simulate(6, rng, swapped, labels)
    res = compare_populations(a, b)
    assert res.examples.p_value < 0.05
    assert res.examples.statistic > res.examples.null_mean + 3 * res.examples.null_std


def test_null_populations_are_not_flagged() -> None:
    rng, labels, difficulty = task(8)
    res = compare_populations(simulate(6, rng, difficulty, labels), simulate(6, rng, difficulty, labels))
    assert res.examples.p_value > 0.05 and not res.classes.significant.any()


def _null_rejections(seeds: range) -> tuple[int, int]:
    example_hits = class_hits = 0
    for seed in seeds:
        rng, labels, difficulty = task(100 + seed, n=500)
        a, b = simulate(5, rng, difficulty, labels), simulate(5, rng, difficulty, labels)
        res = compare_populations(a, b, seed=seed)
        example_hits += res.examples.p_value < 0.05
        class_hits += bool(res.classes.significant.any())  # family-wise error of Holm-Sidak
    return example_hits, class_hits


def test_null_false_positive_rate_is_about_alpha() -> None:
    example_hits, class_hits = _null_rejections(range(20))
    # 20 draws at alpha 0.05: expect 1; 5 or more has probability 0.3 %.
    assert example_hits <= 4 and class_hits <= 4


@pytest.mark.slow
def test_null_false_positive_rate_is_calibrated() -> None:
    example_hits, class_hits = _null_rejections(range(200))
    # Binomial(200, 0.05): mean 10, sd 3.1; neither too liberal nor needlessly conservative.
    assert 4 <= example_hits <= 18 and class_hits <= 18


# -- control split, results, tables -------------------------------------------------------------


def test_control_halves_are_disjoint_and_seeded() -> None:
    rng, labels, difficulty = task(9, n=100)
    a, b = simulate(7, rng, difficulty, labels), simulate(3, rng, difficulty, labels)
    res = compare_populations(a, b, seed=11)
    ex = res.examples
    assert len(ex.control_models_1) == len(ex.control_models_2) == 3
    assert not set(ex.control_models_1) & set(ex.control_models_2)
    np.testing.assert_allclose(ex.control_1, a.correct[ex.control_models_1].mean(0))
    assert compare_populations(a, b, seed=11).examples.control_models_1 == ex.control_models_1


def test_save_load_table_and_summary(tmp_path) -> None:
    rng, labels, difficulty = task(10, n=300)
    a, b = simulate(4, rng, difficulty, labels, "wide"), simulate(4, rng, difficulty * 0.8, labels, "deep")
    res = compare_populations(a, b, class_groups={"first": [0, 1]})
    res.save(tmp_path / "errors.json")
    back = ErrorComparison.load(tmp_path / "errors.json")
    assert json.dumps(back.to_dict()) == json.dumps(res.to_dict())
    rows = res.class_table()
    assert len(rows) == NUM_CLASSES and rows[3]["diff"] == pytest.approx(res.classes.difference[3])
    md = res.class_table_markdown()
    assert md.count("\n") == NUM_CLASSES + 2 and "acc wide" in md
    assert len(res.class_table("groups")) == 1
    assert "permutation test" in res.summary() and "wide (4 models" in res.summary()


def test_class_without_examples_is_left_out() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1] * 5)
    preds = np.stack([np.where(np.arange(30) % 3 == k, 1 - labels, labels) for k in range(3)])
    a = Population(preds, labels, 3, ["a0", "a1", "a2"])
    b = Population(preds[::-1], labels, 3, ["b0", "b1", "b2"])
    res = compare_populations(a, b)
    assert res.classes.num_examples.tolist() == [15, 15, 0]
    assert np.isnan(res.classes.p_value[2]) and np.isnan(res.classes.p_corrected[2])
    assert not res.classes.significant[2]


# -- files and bad input ------------------------------------------------------------------------


def write_run(directory, logits: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True)
    np.savez(directory / "predictions.npz", logits=logits, labels=labels)


def test_load_predictions_from_runs_and_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    logits = [rng.standard_normal((40, 5)) for _ in range(3)]
    write_run(tmp_path / "run0", logits[0], labels)
    write_run(tmp_path / "run1", logits[1], labels)
    np.savez(tmp_path / "third.npz", predictions=logits[2].argmax(1), labels=labels)
    pop = load_predictions([tmp_path / "run0", tmp_path / "run1", tmp_path / "third.npz"], name="wide")
    assert pop.num_models == 3 and pop.num_classes == 5 and pop.name == "wide"
    np.testing.assert_array_equal(pop.predictions, np.stack([x.argmax(1) for x in logits]))
    np.testing.assert_array_equal(pop.labels, labels)


def test_population_from_logits() -> None:
    rng = np.random.default_rng(1)
    logits = [rng.standard_normal((20, 4)) for _ in range(2)]
    labels = rng.integers(0, 4, 20)
    pop = Population.from_logits(logits, labels, name="w")
    np.testing.assert_array_equal(pop.predictions, [x.argmax(1) for x in logits])
    np.testing.assert_allclose(pop.model_accuracy, [np.mean(x.argmax(1) == labels) for x in logits])
    with pytest.raises(UserInputError, match="one shape"):
        Population.from_logits([logits[0], logits[1][:, :3]], labels)


def test_mismatched_prediction_files_are_refused(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    write_run(tmp_path / "a", rng.standard_normal((40, 5)), labels)
    write_run(tmp_path / "shorter", rng.standard_normal((30, 5)), labels[:30])
    write_run(tmp_path / "shuffled", rng.standard_normal((40, 5)), labels[::-1])
    write_run(tmp_path / "classes", rng.standard_normal((40, 7)), labels)
    np.savez(tmp_path / "nolabels.npz", logits=rng.standard_normal((40, 5)))
    for other, message in [("shorter", "40 vs 30 examples"), ("shuffled", "labels differ"),
                           ("classes", "5 and 7 classes"), ("nolabels.npz", "expected arrays 'labels'"),
                           ("missing", "no such file")]:
        with pytest.raises(UserInputError, match=message):
            load_predictions([tmp_path / "a", tmp_path / other])
    with pytest.raises(UserInputError, match="no prediction files"):
        load_predictions([])


def test_bad_comparisons_are_one_clear_error() -> None:
    rng, labels, difficulty = task(12, n=100)
    a, b = simulate(3, rng, difficulty, labels), simulate(3, rng, difficulty, labels)
    single = Population(a.predictions[:1], labels, NUM_CLASSES, ["only"], "lonely")
    with pytest.raises(UserInputError, match="lonely has 1 model"):
        compare_populations(single, b)
    other_set = Population(b.predictions[:, ::-1], labels[::-1], NUM_CLASSES, b.sources)
    with pytest.raises(UserInputError, match="different test sets"):
        compare_populations(a, other_set)
    cases = [
        ({"g": ["cat"]}, None, "unknown class 'cat'"),
        ({"g": [12]}, None, "class index 12"),
        ({"g": []}, None, "non-empty list"),
        ({}, None, "empty"),
        (None, ["x"] * NUM_CLASSES, "unique"),
        (None, ["x"], "1 class names"),
    ]
    for groups, names, message in cases:
        with pytest.raises(UserInputError, match=message):
            compare_populations(a, b, class_groups=groups, class_names=names)
    with pytest.raises(UserInputError, match="alpha"):
        compare_populations(a, b, alpha=1.5)
    with pytest.raises(UserInputError, match="class indices"):
        Population(a.predictions + 20, labels, NUM_CLASSES, a.sources)


def test_load_class_groups(tmp_path) -> None:
    (tmp_path / "groups.json").write_text(json.dumps({"animals": ["cat", "dog"], "vehicles": [0, 1]}))
    assert load_class_groups(tmp_path / "groups.json") == {"animals": ["cat", "dog"], "vehicles": [0, 1]}
    (tmp_path / "bad.json").write_text(json.dumps(["cat"]))
    with pytest.raises(UserInputError, match="mapping each group"):
        load_class_groups(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_class_groups(tmp_path / "broken.json")


# -- figures ------------------------------------------------------------------------------------


def test_figures(tmp_path) -> None:
    rng, labels, difficulty = task(6)
    worse = difficulty.copy()
    worse[labels == 3] -= 0.4
    res = compare_populations(simulate(4, rng, difficulty, labels), simulate(4, rng, np.clip(worse, 0, 1), labels),
                              class_groups={"three": [3], "others": [0, 1]})
    axes = plot_example_scatter(res)
    assert len(axes) == 3 and len(axes[0].collections) == 1
    differences = [p.get_height() for p in axes[2].patches]  # both histograms count every example
    assert sum(differences) == 2 * len(res.examples.accuracy_a) and axes[2].get_yscale() == "log"
    axes[0].figure.savefig(tmp_path / "scatter.png")
    ax = plot_class_differences(res)
    assert len(ax.patches) == NUM_CLASSES
    red = [p for p in ax.patches if p.get_facecolor()[0] > 0.8 and p.get_facecolor()[1] < 0.3]
    assert len(red) == int(res.classes.significant.sum()) >= 1
    assert len(plot_class_differences(res, level="groups").patches) == 2
    assert len(plot_class_differences(res, top=3).patches) == 3


def test_the_control_names_its_halves_in_plain_words() -> None:
    rng, labels, difficulty = task(7, n=100)
    res = compare_populations(simulate(3, rng, difficulty, labels), simulate(3, rng, difficulty, labels))
    control = plot_example_scatter(res)[1]
    assert control.get_xlabel().endswith("half 1 (1 model)") and control.get_ylabel().endswith("half 2 (1 model)")


# -- command line -------------------------------------------------------------------------------


def _runs(tmp_path, prefix: str, difficulty: np.ndarray, labels: np.ndarray, seeds: range) -> list[str]:
    paths = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        correct = rng.random(len(labels)) < difficulty
        preds = np.where(correct, labels, (labels + 1) % NUM_CLASSES)
        logits = np.eye(NUM_CLASSES)[preds] + 0.01 * rng.standard_normal((len(labels), NUM_CLASSES))
        write_run(tmp_path / f"{prefix}{seed}", logits, labels)
        paths.append(str(tmp_path / f"{prefix}{seed}"))
    return paths


def test_cli_errors_writes_results_and_figures(tmp_path, capsys) -> None:
    from ckatlas.cli import main

    _, labels, difficulty = task(13, n=300)
    worse = difficulty.copy()
    worse[labels == 4] -= 0.5
    a = _runs(tmp_path, "wide", difficulty, labels, range(4))
    b = _runs(tmp_path, "deep", np.clip(worse, 0, 1), labels, range(10, 14))
    (tmp_path / "groups.json").write_text(json.dumps({"four": ["c4"], "low": ["c0", "c1"]}))
    (tmp_path / "classes.txt").write_text("\n".join(f"c{k}" for k in range(NUM_CLASSES)) + "\n")
    out = tmp_path / "analysis"
    argv = ["errors", "--a", *a, "--b", *b, "--name-a", "wide", "--name-b", "deep", "--groups",
            str(tmp_path / "groups.json"), "--class-names", str(tmp_path / "classes.txt"), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wide (4 models" in printed and "classes: 1 of 10 differ" in printed and ": c4" in printed
    saved = ErrorComparison.load(out / "errors.json")
    direct = compare_populations(load_predictions(a, "wide"), load_predictions(b, "deep"),
                                 class_groups={"four": ["c4"], "low": ["c0", "c1"]},
                                 class_names=[f"c{k}" for k in range(NUM_CLASSES)])
    assert json.dumps(saved.to_dict()) == json.dumps(direct.to_dict())
    for name in ("classes.md", "groups.md", "example_scatter.png", "class_differences.png", "group_differences.png"):
        assert (out / name).stat().st_size > 0


def test_cli_errors_user_errors_are_one_line(tmp_path, capsys) -> None:
    from ckatlas.cli import main

    _, labels, difficulty = task(14, n=100)
    a = _runs(tmp_path, "a", difficulty, labels, range(2))
    b = _runs(tmp_path, "b", difficulty, labels, range(5, 7))
    write_run(tmp_path / "other", np.eye(NUM_CLASSES)[labels[:50]], labels[:50])
    (tmp_path / "groups.json").write_text(json.dumps({"g": ["zebra"]}))
    cases = [
        (["--a", *a, "--b", b[0], str(tmp_path / "other")], "different test sets"),
        (["--a", a[0], "--b", *b], "has 1 model"),
        (["--a", *a, "--b", *b, "--groups", str(tmp_path / "groups.json")], "unknown class 'zebra'"),
        (["--a", *a, "--b", *b, "--groups", str(tmp_path / "missing.json")], "no such file"),
        (["--a", *a, "--b", *b, "--alpha", "2"], "alpha"),
    ]
    for argv, message in cases:
        assert main(["errors", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ckatlas errors: error:") and message in err, err
