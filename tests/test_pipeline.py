import numpy as np

from preprocessing import PreprocessConfig, build_cache, load_dataset, make_batches, validation_split


def test_batches_are_uint8_cover_the_split_once_and_reshuffle(split_dataset, cache_dir):
    data = load_dataset(split_dataset)
    cache = build_cache(data.train, PreprocessConfig(size=(12, 16)), cache_dir)
    split = validation_split(data.train, seed=0)
    ds = make_batches(cache, split.train, batch_size=7, shuffle=True, seed=1)

    def epoch():
        seen_images, seen_labels = [], []
        for x, y in ds:
            assert x.dtype.name == "uint8" and x.shape[1:] == (12, 16, 3) and x.shape[0] <= 7
            seen_images.append(x.numpy())
            seen_labels.append(y.numpy())
        return np.concatenate(seen_images), np.concatenate(seen_labels)

    x1, y1 = epoch()
    x2, _ = epoch()
    assert len(x1) == len(split.train)
    # every training image exactly once, with its own label
    expected = cache.read(split.train)
    key = lambda a: sorted(a.reshape(len(a), -1).sum(1).tolist())  # noqa: E731
    assert key(x1) == key(expected)
    assert sorted(y1.tolist()) == sorted(data.train.labels[split.train].tolist())
    assert not np.array_equal(x1, x2)  # reshuffled each epoch


def test_unshuffled_order_is_the_index_order(split_dataset, cache_dir):
    data = load_dataset(split_dataset)
    cache = build_cache(data.train, PreprocessConfig(size=(12, 16)), cache_dir)
    idx = np.array([3, 1, 4, 1, 5])
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in make_batches(cache, idx, batch_size=2)])
    np.testing.assert_array_equal(np.concatenate(xs), cache.read(idx))
    np.testing.assert_array_equal(np.concatenate(ys), data.train.labels[idx])
