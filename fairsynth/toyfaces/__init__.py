"""The embedded default world: procedural cartoon faces, a biased reference dataset, a tiny DDPM
trained on it, and two independent attribute classifiers, all shipped inside the package."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DDPM_DIR = WEIGHTS_DIR / "ddpm"
PSEUDO_LABELLER_DIR = WEIGHTS_DIR / "pseudo_labeller"
VERIFIER_DIR = WEIGHTS_DIR / "verifier"
ADP_DIR = WEIGHTS_DIR / "adp"

_SHIPPED = {
    "model": DDPM_DIR,
    "adp": ADP_DIR,
    "verifier": VERIFIER_DIR,
    "pseudo_labeller": PSEUDO_LABELLER_DIR,
}


def resolve(kind: str, value: str | Path) -> Path | str:
    """``'toyfaces'`` -> the shipped artefact of that kind; anything else is returned as given."""
    if str(value) == "toyfaces":
        return _SHIPPED[kind]
    return value
