"""The embedded default world: procedural cartoon faces, a biased reference dataset, a tiny DDPM
trained on it, and two independent attribute classifiers, all shipped inside the package. A plugin (``plugin.py``): the library reaches it only by name."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DDPM_DIR = WEIGHTS_DIR / "ddpm"
PSEUDO_LABELLER_DIR = WEIGHTS_DIR / "pseudo_labeller"
VERIFIER_DIR = WEIGHTS_DIR / "verifier"
ADP_DIR = WEIGHTS_DIR / "adp"
T2I_DIR = WEIGHTS_DIR / "t2i"  # the toy text-to-image model (a Stable Diffusion folder)
T2I_ADP_DIR = WEIGHTS_DIR / "t2i_adp"
