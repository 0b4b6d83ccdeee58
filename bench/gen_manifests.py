"""Generate N realistic, varied, valid manifests into a folder (for bench_validate.py).

The folder becomes a small repository: ``.git/`` (so it is the repository root),
``environment.yml`` and ``data/``, and ``experiments/`` with the manifests. Every manifest is
valid; they differ in shape: seeds as a count or a list, some with trainer, datasets of each kind,
Azure ML compute, an environment, checkpoint sources of each kind (a few naming an experiment
generated before them), tracking, runner and retry sections.

    python bench/gen_manifests.py 1000 /tmp/bench-repo
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

CONTAINERS = ["HelloWorld", "my_project.configs.Panda", "my_project.configs.mil.DeepMIL", "Cifar"]
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]


def _trainer(rng: random.Random) -> list[str]:
    lines = ["trainer:", f"  max_epochs: {rng.randint(1, 200)}"]
    if rng.random() < 0.6:
        lines.append(f"  precision: {rng.choice(PRECISIONS)}")
    if rng.random() < 0.5:
        lines.append(f"  devices: {rng.choice(['1', '2', 'auto', '[0, 1]'])}")
        lines.append(f"  accelerator: {rng.choice(['auto', 'gpu', 'cpu'])}")
    if rng.random() < 0.4:
        lines.append(f"  limit_train_batches: {rng.choice(['0.25', '10', '1.0'])}")
        lines.append(f"  val_check_interval: {rng.choice(['0.5', '100'])}")
    if rng.random() < 0.3:
        lines += ["  deterministic: true", "  gradient_clip_val: 1.0", "  strategy: ddp"]
    return lines


def _datasets(rng: random.Random, index: int) -> list[str]:
    lines = ["datasets:"]
    for d in range(rng.randint(1, 3)):
        kind = rng.choice(["azure", "datastore", "local"])
        if kind == "azure":
            lines += [f"  - azure: panda-{index}-{d}:{rng.randint(1, 9)}", "    mode: download"]
            if rng.random() < 0.5:
                lines.append(f"    mountpoint: /mnt/data{d}")
        elif kind == "datastore":
            lines += ["  - datastore: workspaceblobstore", f"    path: datasets/set{index}/{d}"]
            lines.append("    local: data/hello")
        else:
            lines.append("  - local: data/hello")
    return lines


def _checkpoint(rng: random.Random, index: int, earlier: list[tuple[str, list[int]]]) -> list[str]:
    kind = rng.choice(["path", "url", "run", "experiment"])
    if kind == "experiment" and earlier:
        name, seeds = rng.choice(earlier)
        return [
            "checkpoint:",
            "  source:",
            f"    experiment: {name}",
            f"    seed: {rng.choice(seeds)}",
            "    file: best_val_loss.ckpt",
        ]
    if kind == "url":
        return [
            "checkpoint:",
            "  source:",
            f"    url: https://example.org/models/m{index}.ckpt",
            f"    sha256: {rng.getrandbits(256):064x}",
        ]
    if kind == "run":
        return ["checkpoint:", "  source:", f"    run: exp-{index}-s0-0a1b2c3d:best.ckpt"]
    return ["checkpoint:", "  source:", "    path: checkpoints/model.ckpt", "  resume: true"]


def manifest(index: int, rng: random.Random, earlier: list[tuple[str, list[int]]]) -> str:
    """The text of one valid manifest; ``earlier`` holds (name, seeds) of those already made."""
    name = f"exp-{index:05d}"
    container = rng.choice(CONTAINERS)
    lines = [
        "# yaml-language-server: $schema=../schema/experiment.v1.schema.json",
        "apiVersion: himl/v1",
        "kind: Experiment",
        f"name: {name}",
        f"description: Generated experiment number {index}, for the validate benchmark.",
        f"container: {container}",
    ]
    if rng.random() < 0.5:
        count = rng.randint(1, 5)
        seeds = list(range(count))
        lines.append(f"seeds: {count}")
    else:
        seeds = sorted(rng.sample(range(100), rng.randint(1, 4)))
        lines.append(f"seeds: [{', '.join(map(str, seeds))}]")
    if rng.random() < 0.5:
        lines += ["tags:", "  team: imaging", f"  batch: b{index % 7}"]
    if rng.random() < 0.6:
        lines += ["params:", f"  learning_rate: {rng.choice([0.1, 0.01, 0.001])}"]
        batch_size = rng.choice([8, 16, 32])
        if container != "HelloWorld":  # HelloWorld's one field is learning_rate
            lines.append(f"  batch_size: {batch_size}")
            lines.append("  layers: [64, 64, 32]")
    if rng.random() < 0.8:
        lines += _trainer(rng)
    if rng.random() < 0.5:
        lines += _datasets(rng, index)
    if rng.random() < 0.4:
        lines += ["compute:", "  target: gpu-cluster", f"  num_nodes: {rng.randint(1, 4)}"]
        lines += ["  instance_type: Standard_NC24ads_A100_v4", "  shm_size: 16g"]
        lines += ["environment:", "  conda_file: environment.yml"]
    else:
        lines += ["compute:", "  target: local"]
    if rng.random() < 0.3:
        lines += _checkpoint(rng, index, earlier)
    if rng.random() < 0.3:
        lines += ["tracking:", f"  experiment: bench-{index % 10}", "  display_name: bench run"]
    if rng.random() < 0.2:
        lines += ["runner:", "  log_level: DEBUG", "retry:", "  on_failure: true"]
    earlier.append((name, seeds))
    return "\n".join(lines) + "\n"


def generate(count: int, root: Path, seed: int = 0) -> list[Path]:
    """Write ``count`` manifests under ``root/experiments``; return their paths."""
    rng = random.Random(seed)
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "data" / "hello").mkdir(parents=True, exist_ok=True)
    (root / "environment.yml").write_text("name: bench\ndependencies:\n  - python=3.11\n")
    folder = root / "experiments"
    folder.mkdir(exist_ok=True)
    earlier: list[tuple[str, list[int]]] = []
    paths = []
    for index in range(count):
        path = folder / f"exp-{index:05d}.yaml"
        path.write_text(manifest(index, rng, earlier), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = generate(args.count, args.root, args.seed)
    print(f"{len(paths)} manifests in {args.root / 'experiments'}")


if __name__ == "__main__":
    main()
