"""Files that ship inside the package, found wherever it is installed (editable or not).

    DEMO_DATASET   the embedded demo dataset (KA, T = 0.6, N = 1000, 24 configurations)
    DEMO_CONFIGS   the demo run configs, ``demo_<model>.toml``
"""

from pathlib import Path

#: The embedded demo dataset (also reachable as ``data/demo`` in a clone).
DEMO_DATASET = Path(__file__).resolve().parent / "demo"
#: Directory of the demo configs (also reachable as ``experiments/configs`` in a clone).
DEMO_CONFIGS = Path(__file__).resolve().parent / "configs"
