"""Finding containers by name: packages written into the test's project folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import write_package

from himl_manifest.errors import LookupFailed
from himl_manifest.runner.lookup import find_container

CONTAINER = """
from himl_manifest import LightningContainer

class {name}(LightningContainer):
    pass
"""

#: The reference document's "full file", with only the import line adapted.
REFERENCE_EXAMPLE = """
from pathlib import Path
from torch.utils.data import DataLoader
from pytorch_lightning import LightningModule, LightningDataModule
from himl_manifest.lightning_container import LightningContainer

class MyLightningModel(LightningModule):
    def __init__(self):
        self.layer = ...
    def training_step(self, *args, **kwargs):
        ...
    def forward(self, *args, **kwargs):
        ...
    def configure_optimizers(self):
        ...
    def test_step(self, *args, **kwargs):
        ...

class MyDataModule(LightningDataModule):
    def __init__(self, root_path: Path):
        # All data should be read from the folder given in self.root_path
        self.root_path = root_path
    def train_dataloader(self, *args, **kwargs) -> DataLoader:
        # The data should be read off self.root_path
        train_dataset = ...
        return DataLoader(train_dataset, batch_size=5, num_workers=5)
    def val_dataloader(self, *args, **kwargs) -> DataLoader:
        # The data should be read off self.root_path
        val_dataset = ...
        return DataLoader(val_dataset, batch_size=5, num_workers=5)
    def test_dataloader(self, *args, **kwargs) -> DataLoader:
        # The data should be read off self.root_path
        test_dataset = ...
        return DataLoader(test_dataset, batch_size=5, num_workers=5)

class MyContainer(LightningContainer):
    def __init__(self):
        super().__init__()
        self.azure_datasets = ["folder_name_in_azure_blob_storage"]
        self.local_datasets = [Path("/some/local/path")]
        self.max_epochs = 42

    def create_model(self) -> LightningModule:
        return MyLightningModel()

    def get_data_module(self) -> LightningDataModule:
        return MyDataModule(root_path=self.local_dataset)
"""


def test_bare_name_searches_the_default_configs_namespace(project: Path) -> None:
    found = find_container("HelloWorld")
    assert found.__module__ == "himl_manifest.configs.hello_world"


def test_package_hint_searches_every_module_recursively(package: Any) -> None:
    package("lk_hint", {"sub/__init__.py": "", "sub/deep.py": CONTAINER.format(name="Deep")})
    assert find_container("lk_hint.Deep").__module__ == "lk_hint.sub.deep"
    assert find_container("lk_hint.sub.Deep").__module__ == "lk_hint.sub.deep"


def test_full_module_path_searches_that_module(package: Any) -> None:
    package(
        "lk_full", {"a.py": CONTAINER.format(name="Model"), "b.py": CONTAINER.format(name="Model")}
    )
    assert find_container("lk_full.b.Model").__module__ == "lk_full.b"


def test_ambiguous_name_lists_every_defining_module(package: Any) -> None:
    package(
        "lk_amb",
        {
            "a.py": CONTAINER.format(name="Model"),
            "b.py": CONTAINER.format(name="Model"),
            "reexport.py": "from lk_amb.a import Model\n",
        },
    )
    with pytest.raises(LookupFailed) as error:
        find_container("lk_amb.Model")
    message = str(error.value)
    assert "lk_amb.a" in message and "lk_amb.b" in message
    assert "reexport" not in message


def test_reexports_are_not_duplicates(package: Any) -> None:
    package(
        "lk_re",
        {
            "__init__.py": "from lk_re.impl import Model\n",
            "impl.py": CONTAINER.format(name="Model"),
        },
    )
    assert find_container("lk_re.Model").__module__ == "lk_re.impl"


def test_missing_class_suggests_close_names(package: Any) -> None:
    package("lk_miss", {"models.py": CONTAINER.format(name="HelloWorldModel")})
    with pytest.raises(LookupFailed, match="Did you mean 'HelloWorldModel'"):
        find_container("lk_miss.HelloWorldModle")


def test_missing_default_class_suggests_hello_world(project: Path) -> None:
    with pytest.raises(LookupFailed, match="HelloWorld"):
        find_container("HeloWorld")


def test_broken_module_reports_its_import_error(package: Any) -> None:
    broken = "import not_a_real_module_xyz\n" + CONTAINER.format(name="Broken")
    package("lk_broken", {"fine.py": CONTAINER.format(name="Other"), "bad.py": broken})
    with pytest.raises(LookupFailed) as error:
        find_container("lk_broken.Broken")
    message = str(error.value)
    assert "lk_broken.bad" in message
    assert "not_a_real_module_xyz" in message
    assert "ModuleNotFoundError" in message


def test_broken_unrelated_module_does_not_break_the_search(package: Any) -> None:
    package(
        "lk_unrel",
        {"good.py": CONTAINER.format(name="Good"), "bad.py": "raise RuntimeError('boom')\n"},
    )
    assert find_container("lk_unrel.Good").__name__ == "Good"


def test_class_that_is_not_a_container_is_rejected(package: Any) -> None:
    package("lk_not", {"models.py": "class Plain:\n    pass\n"})
    with pytest.raises(LookupFailed, match="not a LightningContainer subclass"):
        find_container("lk_not.Plain")


def test_candidates_are_never_instantiated(package: Any) -> None:
    body = CONTAINER.format(name="Loud") + "    def __init__(self):\n        raise SystemExit(3)\n"
    package("lk_inst", {"models.py": body})
    assert find_container("lk_inst.Loud").__name__ == "Loud"


def test_missing_package_and_invalid_names(project: Path) -> None:
    with pytest.raises(LookupFailed, match="no module or package named 'no_such_pkg_q'"):
        find_container("no_such_pkg_q.Model")
    with pytest.raises(LookupFailed, match="invalid container name"):
        find_container("bad name")


def test_reference_example_imports_and_is_found(package: Any) -> None:
    package("lk_reference", {"my_config.py": REFERENCE_EXAMPLE})
    cls = find_container("lk_reference.MyContainer")
    container = cls()
    assert container.max_epochs == 42
    assert container.local_dataset == Path("/some/local/path")
    assert container.azure_datasets == ["folder_name_in_azure_blob_storage"]
    assert find_container("lk_reference.my_config.MyContainer") is cls


def test_lookup_of_a_plain_package_imports_no_torch(project: Path) -> None:
    write_package(project, "lk_light", {"models.py": CONTAINER.format(name="Light")})
    code = (
        "import sys, himl_manifest\n"
        "from himl_manifest.runner.lookup import find_container\n"
        "assert himl_manifest.LightningContainer\n"
        "assert find_container('lk_light.Light').__name__ == 'Light'\n"
        "import himl_manifest.runner.cli, himl_manifest.runner.settings\n"
        "heavy = ('torch', 'pytorch_lightning', 'lightning', 'mlflow')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_check_container_imports_reports_at_the_container_key(package: Any, project: Path) -> None:
    from himl_manifest.manifest.loader import load_file
    from himl_manifest.operations.check_imports import check_container_imports

    package("lk_diag", {"models.py": CONTAINER.format(name="Fine")})
    manifest = project / "x.yaml"
    manifest.write_text(
        "apiVersion: himl/v1\nkind: Experiment\nname: a\ncontainer: lk_diag.Fien\n---\n"
        "apiVersion: himl/v1\nkind: Experiment\nname: b\ncontainer: lk_diag.Fine\n",
        encoding="utf-8",
    )
    loaded = load_file(manifest, "x.yaml")
    diagnostics = check_container_imports(loaded.documents)
    assert len(diagnostics) == 1
    (d,) = diagnostics
    assert (d.file, d.line, d.column, d.path) == ("x.yaml", 4, 12, "container")
    assert "Did you mean 'Fine'" in d.message
