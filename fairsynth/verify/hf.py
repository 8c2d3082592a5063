"""A Hugging Face image-classification folder as a verifier (``AutoModelForImageClassification``
with its image processor, as ``save_pretrained`` writes them). Its labels (``id2label``) are
mapped onto the params' classes by a table per attribute, ``verify.hf_labels``, as deepface's
are: ``{folder: {attribute: {label: class}}}``. A class's probability is the sum of its labels',
renormalised over the mapped labels; the processor resizes any image to the model's input."""

from __future__ import annotations

import numpy as np

from fairsynth.verify.hf_config import model_labels
from fairsynth.verify.verdict import Verdict, verify_screened


class HFImageClassifier:
    """The folder's model and processor on ``device``; ``attributes`` from the table."""

    def __init__(self, folder, table: dict, device: str = "cpu"):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.torch = torch
        self.model = AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True
        ).to(device).eval()  # fmt: skip
        self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.device, labels = device, model_labels(folder)
        self.attributes, self.columns = {}, {}
        for name, mapping in table.items():
            classes = tuple(dict.fromkeys(mapping.values()))
            self.attributes[name] = classes
            # per class, the label columns it sums
            self.columns[name] = [[labels.index(lb) for lb, c in mapping.items() if c == cls]
                                  for cls in classes]  # fmt: skip

    def verify(self, images) -> Verdict:
        return verify_screened(self, images, None, self._judge)

    def _judge(self, images: np.ndarray) -> Verdict:
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            probs = self.model(**inputs).logits.float().softmax(-1).cpu().numpy()
        out = {}
        for name, columns in self.columns.items():
            summed = np.stack([probs[:, cols].sum(1) for cols in columns], axis=1)
            out[name] = summed / np.clip(summed.sum(1, keepdims=True), 1e-12, None)
        return Verdict(out)

    def close(self) -> None:
        pass


def load_hf(value, settings, device: str = "cpu") -> HFImageClassifier:
    return HFImageClassifier(value, (settings or {}).get(str(value)) or {}, device)
