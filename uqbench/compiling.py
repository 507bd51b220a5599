"""Training steps through ``torch.compile`` or CUDA graphs, opt-in, with a clean eager fallback.

A LeNet-sized model leaves a GPU idle: its step is bound by kernel launches and Python, not
FLOPs (``python -m uqbench.benchmarks.op_count``). ``torch.compile`` fuses the loss's small
operations; ``mode="reduce-overhead"`` also replays them as one CUDA graph. Both give the
eager results only within float tolerance (fused kernels round differently), so they are
opt-in (``uqbench run --compile``) and a run records how its steps ran (``train_steps``), an
execution detail like the device, not part of the run's hash.

:class:`CompiledLoss` is what ``uqbench run`` trains with and what the throughput benchmark
(``uqbench.benchmarks.gpu_throughput``'s ``compiled`` / ``graphed`` modes) times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from uqbench.errors import ConfigError

#: ``uqbench run --compile`` choices: eager, ``torch.compile``'s default mode, CUDA graphs.
COMPILE_MODES = ("off", "default", "reduce-overhead")
EAGER = "eager"


def check_compile_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else :class:`ConfigError`."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def why_not_compiled(mode: str, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` with this torch (``None``: it can be tried)."""
    if mode == "off":
        return None
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if mode == "reduce-overhead" and device.type != "cuda":
        return f"CUDA graphs (reduce-overhead) need a CUDA device, not {device.type}"
    return None


class CompiledLoss:
    """``model.loss`` for training, compiled per ``mode``; eager when it cannot be.

    Call it like ``model.loss(x, y)``. ``mode="off"`` is the plain eager call. Otherwise the
    loss is wrapped in ``torch.compile`` (``"reduce-overhead"``: CUDA graphs, each call a
    new graph step) with inductor's ``fallback_random`` (eager's random draws, so equal to
    eager within float tolerance); compilation happens at the first call. When the mode
    cannot run here (CPU for CUDA graphs, a torch without ``torch.compile``) or compilation
    fails, one line goes to ``log`` and every call is eager from then on: the RNG state is
    restored to what it was before the failed call, so that call's draws are the eager
    ones. :attr:`how` says how the steps ran: ``"eager"``, ``"compile:default"``,
    ``"compile:reduce-overhead"``, or ``"eager (compile:<mode> failed: <reason>)"``.
    """

    def __init__(
        self,
        model: Any,
        mode: str = "off",
        device: torch.device | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        self.model = model
        self.mode = check_compile_mode(mode)
        self.device = device if device is not None else model._device()
        self._log = log
        self._compiled: Callable | None = None
        self._compiled_steps = 0
        self._mark: Callable[[], None] | None = None
        self.how = EAGER
        #: What made it fall back to eager (None: it did not).
        self.error: Exception | None = None
        if mode == "off":
            return
        why = why_not_compiled(mode, self.device)
        if why is not None:
            self._fallback(RuntimeError(why))
            return

        def loss_of(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            return model.loss(x, y)

        # The modes' options plus fallback_random: random ops call torch's own generator, so
        # the noise drawn is eager's and the results differ from eager's by rounding only.
        options: dict[str, Any] = {"fallback_random": True}
        if mode == "reduce-overhead":
            options["triton.cudagraphs"] = True  # what mode="reduce-overhead" sets
        try:
            # One run's graphs at a time: a suite's later runs would otherwise hit dynamo's
            # recompile limit for this function and silently run eagerly.
            torch._dynamo.reset()
            self._compiled = torch.compile(loss_of, options=options)
        except Exception as exc:  # noqa: BLE001 - no compiler, a backend missing: eager
            self._fallback(exc)
            return
        if mode == "reduce-overhead":
            self._mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
        self.how = f"compile:{mode}"

    def _fallback(self, exc: Exception) -> None:
        self._compiled = None
        self.error = exc
        first = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first}"[:200]
        self.how = f"{EAGER} (compile:{self.mode} failed: {reason})"
        if self._compiled_steps:  # it had run compiled steps before
            self.how = f"compile:{self.mode}, then {self.how}"
        if self._log is not None:
            self._log(f"    --compile {self.mode}: {reason}; training eagerly")

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its parts, as ``model.loss(x, y)``."""
        if self._compiled is None:
            return self.model.loss(x, y)
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            if self._mark is not None:
                self._mark()  # a new step: the graph's previous outputs may be overwritten
            out = self._compiled(x, y)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self._fallback(exc)
            return self.model.loss(x, y)
        self._compiled_steps += 1
        return out
