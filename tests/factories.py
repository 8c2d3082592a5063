"""What several test modules build: params for tiny runs of the random tiny world, a labelled
image folder of toy faces, the exception a test raises to stop a run mid-way."""

import pandas as pd
from PIL import Image

from fairsynth.app.config import load_params
from fairsynth.toyfaces.render import ATTRIBUTES, render_batch

PARTIAL_OK = "{mode: standalone, n: 4, budget: 12, seed: 3, accept_partial: true}"


def tiny_params(tmp_path, tiny_world, mode="distribution", gen=PARTIAL_OK):
    """Params of a tiny run of the random tiny world (``tiny_world``'s folders in ``tmp_path``),
    which rarely fills a 50/50 target: by default they accept a partial set (the tests of a
    failing incomplete run say otherwise)."""
    p = tmp_path / "params.yaml"
    p.write_text(
        f"reference: {{path: {tmp_path / 'ref'}, n: 60, seed: 1}}\n"
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        "target: {marginals: {skin: {light: 0.5, dark: 0.5}}}\n"
        f"guidance: {{mode: {mode}, loss: chi2, strength: 1.0, shift: 0, batch_size: 3}}\n"
        "verify: {confidence: 0.0}\n"
        f"generate: {gen}\n"
        f"output: {{dir: {tmp_path / 'out'}, shard_size: 2}}\n"
    )
    return load_params(p)


def labelled_folder(tmp_path, n=6):
    """``n`` toy faces as PNGs in ``tmp_path`` and their labels (a frame with a ``file`` column)."""
    images, labels = render_batch(n, seed=3)
    rows = []
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"img{i}.png")
        rows.append({"file": f"img{i}.png", **{k: ATTRIBUTES[k][labels[k][i]] for k in ATTRIBUTES}})
    return images, labels, pd.DataFrame(rows)


class Crash(Exception):
    """Raised by a test's batch callback to stop a run as a crash would."""
