"""The offline task generators: valid, deterministic, cached without pickle, and labelled correctly.

Every label is checked by code that does not share the generator's logic: a stack machine for
ListOps, a connected-component labelling (scipy) for Pathfinder, a linear scan for recall.
"""

import functools
import random
import zipfile

import numpy as np
import pytest
import torch
from scipy import ndimage

from pdesim import tasks
from pdesim.tasks import listops, pathfinder, recall
from pdesim.tasks.dataset import TaskData

SMALL = {
    "listops": dict(n=600, seq_len=96, min_len=24),
    "pathfinder": dict(n=200, seq_len=256),
    "recall": dict(n=600, seq_len=96, min_len=24),
}


def _small(name: str, seed: int = 0, **changes) -> TaskData:
    return tasks.make_task(name, seed=seed, use_cache=False, **(SMALL[name] | changes))


@pytest.fixture(scope="module")
def listops_2000() -> TaskData:
    return tasks.make_task("listops", n=2000, seq_len=128, min_len=32, seed=11, use_cache=False)


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_every_task_gives_valid_ids_right_padding_only_by_zero_and_lengths_in_range(name):
    data = _small(name)
    n, max_len = data.ids.shape
    assert n == SMALL[name]["n"] and max_len == SMALL[name]["seq_len"]
    assert data.ids.dtype == data.labels.dtype == data.lengths.dtype == torch.long
    assert int(data.ids.min()) >= 0 and int(data.ids.max()) < data.vocab_size
    assert int(data.labels.min()) >= 0 and int(data.labels.max()) < data.num_classes
    # A token is padding exactly when it lies at or after the sequence's length.
    valid = torch.arange(max_len)[None, :] < data.lengths[:, None]
    assert torch.equal(data.ids != 0, valid)
    assert int(data.lengths.min()) >= SMALL[name].get("min_len", max_len)
    assert int(data.lengths.max()) <= max_len
    assert int(data.class_counts().sum()) == n
    assert len(data.token_names) == data.vocab_size and data.token_names[0] == "<pad>"


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_the_same_seed_gives_identical_data_and_another_seed_different_data(name):
    first, again, other = _small(name, seed=5), _small(name, seed=5), _small(name, seed=6)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.labels, again.labels)
    assert torch.equal(first.lengths, again.lengths) and first.params == again.params
    assert (first.ids != other.ids).any(dim=1).float().mean() > 0.9


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_the_cache_round_trip_is_identical_and_the_file_is_an_npz_without_pickle(name, tmp_path, monkeypatch):
    made = tasks.make_task(name, seed=3, cache_dir=tmp_path, **SMALL[name])
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and files[0].name.startswith(name)

    # A second call must read the file: generating again would fail the test.
    generator, version = tasks.GENERATORS[name]

    @functools.wraps(generator)  # the same signature, hence the same cache key
    def refuse(*args, **kwargs):
        pytest.fail("regenerated instead of loading the cache")

    monkeypatch.setitem(tasks.GENERATORS, name, (refuse, version))
    loaded = tasks.make_task(name, seed=3, cache_dir=tmp_path, **SMALL[name])
    for field in ("ids", "labels", "lengths"):
        assert torch.equal(getattr(made, field), getattr(loaded, field))
    assert (loaded.vocab_size, loaded.num_classes, loaded.pad_id, loaded.name) == (
        made.vocab_size, made.num_classes, 0, name,
    )
    assert loaded.params == made.params and loaded.token_names == made.token_names

    assert files[0].read_bytes()[:2] == b"PK"  # a zip of .npy members, not a pickle stream
    with zipfile.ZipFile(files[0]) as archive:
        assert sorted(archive.namelist()) == ["ids.npy", "labels.npy", "lengths.npy", "meta.npy"]
    with np.load(files[0], allow_pickle=False) as archive:
        assert all(archive[key].dtype != object for key in archive.files)


def test_every_parameter_keys_its_own_cache_file_and_no_temporary_file_is_left(tmp_path):
    base = dict(n=50, seq_len=64, min_len=16, seed=0, cache_dir=tmp_path)
    for changes in ({}, {"seed": 1}, {"n": 51}, {"seq_len": 65}, {"min_len": 17}, {"balance": True}, {"max_args": 5}):
        tasks.make_task("listops", **(base | changes))
    tasks.make_task("listops", **base)  # the first set again: no new file
    assert len(list(tmp_path.glob("listops-*.npz"))) == 7
    assert not [path for path in tmp_path.iterdir() if path.suffix != ".npz"]


def test_the_pdesim_cache_environment_variable_moves_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PDESIM_CACHE", str(tmp_path / "elsewhere"))
    assert tasks.default_cache_dir() == tmp_path / "elsewhere"
    tasks.make_task("recall", n=10, seq_len=16, seed=0)
    assert len(list((tmp_path / "elsewhere").glob("recall-*.npz"))) == 1


def test_an_unknown_task_or_parameter_is_refused_before_generating(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        tasks.make_task("imdb", n=10, seq_len=16, seed=0, cache_dir=tmp_path)
    with pytest.raises(TypeError):
        tasks.make_task("listops", n=10, seq_len=16, seed=0, cache_dir=tmp_path, depth=3)
    with pytest.raises(ValueError, match="square"):
        tasks.make_task("pathfinder", n=10, seq_len=200, seed=0, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_listops_labels_equal_the_independent_evaluator_on_2000_examples(listops_2000):
    answers = [listops.evaluate_listops(row) for row in listops_2000.ids]
    assert answers == listops_2000.labels.tolist()


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("[MAX 2 9 4 ]", 9),
        ("[MIN 7 3 5 ]", 3),
        ("[SM 9 9 9 ]", 7),
        ("[MED 3 1 2 ]", 2),
        ("[MED 1 2 ]", 1),  # LRA: int(np.median([1, 2])) = int(1.5)
        ("[MED 3 8 ]", 5),
        ("[MAX 1 [MIN 5 6 ] [SM 4 4 [MED 9 0 9 ] ] 2 ]", 7),
    ],
)
def test_the_listops_evaluator_follows_lra_for_hand_written_expressions(expression, value):
    ids = [listops.TOKEN_NAMES.index(token) for token in expression.split()]
    assert listops.evaluate_listops(ids + [0, 0]) == value


def test_listops_uses_lra_tokens_and_every_expression_is_closed_and_unique(listops_2000):
    assert listops_2000.vocab_size == 16 and listops_2000.num_classes == 10
    assert set(listops_2000.token_names[11:]) == {"[MIN", "[MAX", "[MED", "[SM", "]"}
    opens = ((listops_2000.ids >= 11) & (listops_2000.ids <= 14)).sum(dim=1)
    closes = (listops_2000.ids == 15).sum(dim=1)
    assert torch.equal(opens, closes) and int(opens.min()) >= 1
    assert len({row.numpy().tobytes() for row in listops_2000.ids}) == 2000


def _lra_reference_tree(rng: random.Random, depth: int, budget: list[int]) -> list[str] | None:
    """LRA's generate_tree (depth from 1, operator with probability 0.25), abandoned once too long."""
    if depth < 10 and rng.random() <= 0.25:
        tokens = [rng.choice(listops.OPERATOR_NAMES)]
        for _ in range(rng.randint(2, 10)):
            child = _lra_reference_tree(rng, depth + 1, budget)
            if child is None:
                return None
            tokens += child
        return tokens + ["]"]
    budget[0] -= 1
    return None if budget[0] < 0 else [str(rng.randrange(10))]


def test_listops_follows_the_distribution_of_lra_generate_tree_for_its_length_range():
    rng, reference = random.Random(0), []
    while len(reference) < 3000:
        tree = _lra_reference_tree(rng, 1, [64])
        if tree is not None and 16 <= len(tree) <= 64:
            reference.append(tree)
    ours = tasks.make_task("listops", n=3000, seq_len=64, min_len=16, seed=0, use_cache=False, unique=False)
    reference_labels = [listops.evaluate_listops([listops.TOKEN_NAMES.index(t) for t in tree]) for tree in reference]
    reference_fractions = np.bincount(reference_labels, minlength=10) / 3000
    our_fractions = ours.class_counts().numpy() / 3000
    assert np.abs(reference_fractions - our_fractions).max() < 0.03
    reference_mean_length = np.mean([len(tree) for tree in reference])
    assert abs(float(ours.lengths.float().mean()) / reference_mean_length - 1) < 0.03


def test_listops_balance_gives_every_class_between_5_and_15_percent(listops_2000):
    balanced = tasks.make_task("listops", n=2000, seq_len=128, min_len=32, seed=11, use_cache=False, balance=True)
    fractions = balanced.class_counts().numpy() / 2000
    assert fractions.min() >= 0.05 and fractions.max() <= 0.15
    assert balanced.class_counts().tolist() == [200] * 10
    # Without it the classes are LRA's: 0 and 9 (MIN and MAX saturate) well above a tenth.
    natural = listops_2000.class_counts().numpy() / 2000
    assert natural[0] > 0.12 and natural[9] > 0.12
    assert [listops.evaluate_listops(row) for row in balanced.ids[:500]] == balanced.labels[:500].tolist()


def test_pathfinder_labels_equal_a_flood_fill_of_the_decoded_image_and_classes_are_half_half():
    size, n = 16, 400
    data = tasks.make_task("pathfinder", n=n, seq_len=size * size, seed=2, use_cache=False)
    params = data.params
    assert data.class_counts().tolist() == [n // 2, n // 2]
    eight_neighbourhood = np.ones((3, 3), dtype=int)
    for row, label in zip(data.ids.numpy(), data.labels.tolist()):
        image = row.reshape(size, size)
        components, count = ndimage.label(image >= pathfinder.PATH, structure=eight_neighbourhood)
        marks = np.argwhere(image == pathfinder.ENDPOINT)
        assert len(marks) == 2
        same_curve = components[tuple(marks[0])] == components[tuple(marks[1])]
        assert same_curve == bool(label)
        # Every curve is its own component: no two curves touch, not even diagonally.
        assert count == 2 + params["distractors"]
        assert int((image >= pathfinder.PATH).sum()) == (
            2 * params["path_length"] + params["distractors"] * params["distractor_length"]
        )
        assert pathfinder.endpoints_connected(row, size) == bool(label)


def test_pathfinder_images_at_lra_scale_are_32_by_32_sequences_of_1024_tokens():
    data = tasks.make_task("pathfinder", n=20, seq_len=1024, seed=0, use_cache=False)
    assert data.ids.shape == (20, 1024) and data.params["size"] == 32
    assert data.lengths.tolist() == [1024] * 20 and data.num_classes == 2 and data.vocab_size == 4


def test_recall_labels_equal_the_evaluator_classes_are_balanced_and_the_pair_can_be_anywhere():
    data = tasks.make_task("recall", n=3000, seq_len=128, min_len=32, seed=4, use_cache=False)
    num_keys = data.params["num_keys"]
    assert [recall.evaluate_recall(row, num_keys) for row in data.ids] == data.labels.tolist()
    assert data.class_counts().tolist() == [300] * 10
    # Where the queried pair sits, as a fraction of the way from the start to the query.
    positions = []
    for row, length in zip(data.ids.tolist(), data.lengths.tolist()):
        key = row[length - 1]
        positions.append(row.index(key) / (length - 2))
    assert min(positions) == 0.0 and max(positions) > 0.95
    assert 0.2 < np.mean(np.array(positions) < 0.25) < 0.3
    lengths = data.lengths.numpy()
    assert (lengths % 2 == 0).all() and lengths.min() == 32 and lengths.max() == 128


def test_split_has_the_requested_sizes_no_overlap_and_covers_the_data(listops_2000):
    train, val, test = listops_2000.split((0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (1600, 200, 200)
    rows = [{row.numpy().tobytes() for row in part.ids} for part in (train, val, test)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert len(rows[0] | rows[1] | rows[2]) == 2000
    again = listops_2000.split((0.8, 0.1, 0.1), seed=0)
    assert torch.equal(again[1].ids, val.ids)
    assert not torch.equal(listops_2000.split((0.8, 0.1, 0.1), seed=1)[1].ids, val.ids)
    with pytest.raises(ValueError):
        listops_2000.split((0.8, 0.1))


def test_batches_cover_every_example_exactly_once_per_epoch(listops_2000):
    data = listops_2000.subset(range(103))
    epoch = list(data.batches(10, seed=0))
    assert [len(labels) for _, labels in epoch] == [10] * 10 + [3]
    ids = torch.cat([batch for batch, _ in epoch])
    rows = sorted(row.numpy().tobytes() for row in ids)
    assert rows == sorted(row.numpy().tobytes() for row in data.ids)
    # The labels travel with their rows.
    by_row = {row.numpy().tobytes(): int(label) for row, label in zip(data.ids, data.labels)}
    pairs = [(row, label) for batch, labels in epoch for row, label in zip(batch, labels)]
    assert all(by_row[row.numpy().tobytes()] == int(label) for row, label in pairs)

    same = torch.cat([batch for batch, _ in data.batches(10, seed=0)])
    other = torch.cat([batch for batch, _ in data.batches(10, seed=1)])
    ordered = torch.cat([batch for batch, _ in data.batches(10, seed=0, shuffle=False)])
    assert torch.equal(same, ids) and not torch.equal(other, ids) and torch.equal(ordered, data.ids)
    assert [len(labels) for _, labels in data.batches(10, seed=0, drop_last=True)] == [10] * 10


def test_batches_and_splits_are_torch_data_pipelines_in_the_order_of_a_seeded_permutation(listops_2000):
    data = listops_2000.subset(range(103))
    assert isinstance(data, torch.utils.data.Dataset) and len(data) == 103
    ids, label = data[5]
    assert torch.equal(ids, data.ids[5]) and int(label) == int(data.labels[5])
    order = torch.randperm(103, generator=torch.Generator().manual_seed(7))
    batches = list(data.batches(10, seed=7))
    assert torch.equal(torch.cat([b for b, _ in batches]), data.ids[order])  # the order resumes rely on
    loader = torch.utils.data.DataLoader(data, batch_size=10, shuffle=False)
    first_ids, first_labels = next(iter(loader))  # an ordinary DataLoader reads it too
    assert torch.equal(first_ids, data.ids[:10]) and torch.equal(first_labels, data.labels[:10])
    parts = data.split((0.5, 0.5), seed=3)
    permutation = torch.randperm(103, generator=torch.Generator().manual_seed(3))
    assert torch.equal(parts[0].ids, data.ids[permutation[:52]]) and len(parts[1]) == 51


def test_padding_right_pads_to_the_requested_length_with_the_pad_id():
    from pdesim.tasks.dataset import pad_sequences

    ids, lengths = pad_sequences([[3, 4, 5], [7], []], 5, pad_id=0)
    assert ids.tolist() == [[3, 4, 5, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]] and lengths.tolist() == [3, 1, 0]
    with pytest.raises(ValueError, match="exceeds max_len=2"):
        pad_sequences([[1, 2, 3]], 2)


@pytest.mark.parametrize(
    ("name", "seq_len", "says"),
    [
        ("pathfinder", 2, "must be the square of an image side >= 6"),
        ("pathfinder", 30, "must be the square of an image side >= 6"),
        ("recall", 3, "hold no whole number of pairs"),
        ("listops", 2, "widen the length range"),
    ],
)
def test_an_impossible_length_is_a_value_error_naming_it(name, seq_len, says):
    with pytest.raises(ValueError, match=says):
        tasks.make_task(name, n=40, seq_len=seq_len, seed=0, use_cache=False)
