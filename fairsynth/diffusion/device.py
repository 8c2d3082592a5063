"""Where a model runs and in what precision, and noise that means the same on every device.

Noise is always drawn on the CPU, from the (seed, batch) generator, in float32, and then moved:
a seed gives the same initial noise and the same DDIM eta noise on a CPU, a GPU or in bfloat16
(cast after drawing). The eta noise is drawn step by step (``StepNoise``) in the order the
scheduler itself would draw it; on CUDA it is copied asynchronously, so the loop never waits
for it (the host runs at most two steps ahead of the device).
"""

from __future__ import annotations

import torch

from fairsynth.core.devices import DEVICE_PATTERN, DEVICE_WORDS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA device is available, else ``cpu``; others as given
    (checked: a missing CUDA device or index is a ValueError naming it)."""
    if not DEVICE_PATTERN.match(name):
        raise ValueError(f"device must be {DEVICE_WORDS}, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device is available here")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps': no MPS device is available here")
    return name


def device_kind(name: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a device name as params give it (``auto`` as this
    machine resolves it); never raises for a device that is not here."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":")[0]


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {name!r}") from None


def cpu_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: str | torch.device
) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``generator`` (float32), then moved."""
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device)


class StepNoise:
    """The DDIM eta noise of one batch, one draw of ``shape`` per step from ``generator`` on the
    CPU, in the order the scheduler itself would draw it, moved to ``device``.

    On CUDA each draw goes into one of two pinned host buffers and is copied asynchronously into
    one device buffer (stream order keeps the copy behind the kernels that read the last one);
    the host waits only for the copy two steps back before reusing its buffer."""

    def __init__(
        self, shape: tuple[int, ...], generator: torch.Generator, device: str | torch.device
    ):
        self.shape, self.generator, self.device = tuple(shape), generator, torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._k = 0
        if self._cuda:
            self._host = [torch.empty(self.shape).pin_memory() for _ in range(2)]
            self._copied: list[torch.cuda.Event | None] = [None, None]
            self._buffer = torch.empty(self.shape, device=self.device)

    def next(self) -> torch.Tensor:
        if not self._cuda:
            return cpu_noise(self.shape, self.generator, self.device)
        slot = self._k % 2
        self._k += 1
        event = self._copied[slot]
        if event is not None:
            event.synchronize()
        torch.randn(self.shape, generator=self.generator, out=self._host[slot])
        with torch.cuda.device(self.device):
            self._buffer.copy_(self._host[slot], non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))  # the copy's stream, any device
        self._copied[slot] = event
        return self._buffer


def timestep_plan(
    timesteps: torch.Tensor, device: str | torch.device
) -> tuple[list[int], torch.Tensor]:
    """The schedule as Python ints (for the scheduler, whose tables live on the CPU: no host
    sync per step) and as one tensor on ``device`` (for the UNet), made once per batch."""
    return timesteps.cpu().tolist(), timesteps.to(device)
