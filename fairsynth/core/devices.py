"""Device and precision names as params give them (checked without importing torch)."""

from __future__ import annotations

import re

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_WORDS = "auto, cpu, cuda, cuda:N or mps"
