import numpy as np

from mtkit.data.split import DEV, TEST, TRAIN, UNUSED, EvalSet, SampleChooser, SplitPlan, group_hashes, smallest_distinct


def corpus():
    pairs = []
    for i in range(300):
        for k in range(1 + i % 3):  # some sources have 2 or 3 translations
            pairs.append((f"Source {i}.", f"Cible {i}/{k}."))
    pairs.append(("source 7.", "cible minuscule."))  # differs from "Source 7." only in case
    return pairs


def grouped_roles(pairs, dev_size, test_size, seed, chunk=97):
    """Roles as preprocess computes them: chunk by chunk, then merged."""
    keys = group_hashes([s for s, _ in pairs], seed)
    smallest = smallest_distinct([smallest_distinct(keys[i : i + chunk], dev_size + test_size) for i in range(0, len(keys), chunk)], dev_size + test_size)
    plan = SplitPlan.grouped(len(pairs), smallest, dev_size, test_size)
    return np.concatenate([plan.roles(keys[i : i + chunk], i) for i in range(0, len(keys), chunk)])


def test_grouped_split_holds_out_whole_groups_and_never_leaks():
    pairs = corpus()
    roles = grouped_roles(pairs, dev_size=40, test_size=50, seed=3)
    by_role = {role: {s.casefold() for (s, _), r in zip(pairs, roles) if r == role} for role in (TRAIN, DEV, TEST)}
    assert len(by_role[DEV]) == 40 and len(by_role[TEST]) == 50
    assert not by_role[TRAIN] & (by_role[DEV] | by_role[TEST]) and not by_role[DEV] & by_role[TEST]
    seven = [r for (s, _), r in zip(pairs, roles) if s.casefold() == "source 7."]
    assert len(seven) == 3 and len(set(seven)) == 1  # a group never straddles splits


def test_split_is_deterministic_depends_on_the_seed_not_on_chunking():
    pairs = corpus()
    assert grouped_roles(pairs, 30, 30, seed=5).tolist() == grouped_roles(pairs, 30, 30, seed=5, chunk=13).tolist()
    assert grouped_roles(pairs, 30, 30, seed=5).tolist() != grouped_roles(pairs, 30, 30, seed=6).tolist()


def test_ordered_split_is_the_books():
    plan = SplitPlan.ordered(641, dev_size=129, test_size=0)
    roles = plan.roles(np.zeros(700, np.uint64), 0)
    assert (roles[:512] == TRAIN).all() and (roles[512:641] == DEV).all() and (roles[641:] == UNUSED).all()
    plan = SplitPlan.ordered(100, dev_size=10, test_size=20)
    assert plan.roles(np.zeros(40, np.uint64), 60).tolist() == [TRAIN] * 10 + [DEV] * 10 + [TEST] * 20


def test_sample_is_seeded_exact_and_independent_of_chunking():
    def sample(limit, seed, chunk):
        chooser = SampleChooser(limit, seed)
        for start in range(0, 10_000, chunk):
            chooser.add(np.arange(start, min(start + chunk, 10_000)))
        return chooser.chosen()

    first = sample(1000, 1, 700)
    assert len(first) == 1000 and len(set(first.tolist())) == 1000
    assert first.tolist() == sample(1000, 1, 3000).tolist() == sorted(first.tolist())
    assert first.tolist() != sample(1000, 2, 700).tolist()
    assert 3500 < np.median(first) < 6500  # spread over the corpus, not its beginning
    assert sample(20_000, 1, 700).tolist() == list(range(10_000))  # small corpora: everything


def test_eval_set_groups_repeated_sources():
    data = EvalSet.from_pairs([("a", "1"), ("b", "2"), ("a", "3")])
    assert data.sources == ["a", "b"]
    assert data.references == [["1", "3"], ["2"]]
    assert data.pairs == [("a", "1"), ("a", "3"), ("b", "2")]
