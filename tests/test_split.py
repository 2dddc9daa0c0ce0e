from mtkit.data.split import EvalSet, group_key, leaked_sources, split_pairs


def corpus():
    pairs = []
    for i in range(300):
        for k in range(1 + i % 3):  # some sources have 2 or 3 translations
            pairs.append((f"Source {i}.", f"Cible {i}/{k}."))
    pairs.append(("source 7.", "cible minuscule."))  # differs from "Source 7." only in case
    return pairs


def test_grouped_split_never_leaks_a_source():
    train, dev, test = split_pairs(corpus(), dev_size=40, test_size=50, seed=3)
    assert len(dev.sources) == 40 and len(test.sources) == 50
    train_keys = {group_key(s) for s, _ in train}
    assert not train_keys & {group_key(s) for s in dev.sources + test.sources}
    assert leaked_sources(train, dev) == 0 and leaked_sources(train, test) == 0
    assert len(train) + len(dev.pairs) + len(test.pairs) == len(corpus())


def test_held_out_sources_keep_all_their_references():
    _, dev, _ = split_pairs(corpus(), dev_size=60, test_size=0, seed=1)
    by_source = {}
    for src, tgt in corpus():
        by_source.setdefault(src, []).append(tgt)
    for src, refs in zip(dev.sources, dev.references):
        assert refs == by_source[src]
    assert any(len(refs) > 1 for refs in dev.references)


def test_split_is_deterministic_and_depends_on_the_seed():
    assert split_pairs(corpus(), 30, 30, seed=5) == split_pairs(corpus(), 30, 30, seed=5)
    assert split_pairs(corpus(), 30, 30, seed=5)[1] != split_pairs(corpus(), 30, 30, seed=6)[1]


def test_ordered_split_is_the_books():
    pairs = [(f"s{i}", f"t{i}") for i in range(641)]
    train, dev, test = split_pairs(pairs, dev_size=129, test_size=0, mode="ordered")
    assert train == pairs[:512]
    assert dev.sources == [f"s{i}" for i in range(512, 641)]
    assert test.sources == []


def test_eval_set_groups_repeated_sources():
    data = EvalSet.from_pairs([("a", "1"), ("b", "2"), ("a", "3")])
    assert data.sources == ["a", "b"]
    assert data.references == [["1", "3"], ["2"]]
    assert data.pairs == [("a", "1"), ("a", "3"), ("b", "2")]
    assert data.groups == [0, 0, 1]
