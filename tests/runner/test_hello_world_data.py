"""HelloWorld's data: the CSV shipped in the package is the one its generator makes."""

from __future__ import annotations

from importlib import resources

from himl_manifest.configs import hello_world_data


def test_shipped_csv_matches_its_generator() -> None:
    shipped = resources.files("himl_manifest.configs").joinpath(hello_world_data.CSV_NAME)
    text = shipped.read_text(encoding="utf-8")
    assert text == hello_world_data.generate()
    assert len(text.splitlines()) == 1 + hello_world_data.N_POINTS


def test_data_does_not_depend_on_the_training_seed() -> None:
    import torch

    from himl_manifest.configs.hello_world import HelloDataModule

    torch.manual_seed(1)
    first = HelloDataModule().train.tensors[0]
    torch.manual_seed(2)
    assert torch.equal(first, HelloDataModule().train.tensors[0])
    assert (len(HelloDataModule().test), len(HelloDataModule().val)) == (40, 50)
