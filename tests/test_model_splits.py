"""The real ssTEM sections networks train on never touch the ones benchmarks test on."""

from wiremap.models.splits import SSTEM_DATASETS


def test_train_and_test_sections_are_apart():
    for name, ds in SSTEM_DATASETS.items():
        train = set(range(ds.train.start, ds.train.stop))
        test = set(range(ds.test.start, ds.test.stop))
        assert train and test, name
        # at least one section between them, so a network's z-context cannot reach a test section
        assert min(abs(a - b) for a in train for b in test) >= 2, name
        assert ds.resolution_nm[0] > 2 * ds.resolution_nm[1], name  # serial sections
