"""The trainer's step captured as a CUDA graph: the host launches one graph per full batch instead of the step's
hundreds of kernels (measured on an H200: 7.5x faster for one full-width CNN, ``benchmarks/results/nvidia-h200-
graph-on-off.txt``). Where capture fails, the step runs eagerly (same numbers, slower) and the trainer records
why (:attr:`CapturedStep.failure`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuDNN autotuning, lazy handles)


class Steps(Protocol):
    """What a capture needs of a trainer (:class:`iwshift.train.trainer.Trainer`): its step, the step's buffers, and
    the tensors the step reads and writes."""

    device: torch.device
    batch_size: int
    index: torch.Tensor
    weights: torch.Tensor
    optimizer: Any
    _buffers: Any

    def _step(self, batch: int) -> None: ...

    def _state_tensors(self) -> list[torch.Tensor]: ...

    def _state_addresses(self) -> tuple[int, ...]: ...


class CapturedStep:
    """:meth:`Trainer._step <iwshift.train.trainer.Trainer._step>` on a full batch as a CUDA graph, captured
    again whenever a tensor it reads or writes was replaced (say, by a restored checkpoint)."""

    def __init__(self, trainer: Steps):
        self.trainer = trainer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failure: str | None = None  # why capture failed (the step then runs eagerly for good)
        self._key: tuple[int, ...] = ()
        self.stream: torch.cuda.Stream | None = None  # train_side_by_side's stream for the replays

    @property
    def active(self) -> bool:
        return self.failure is None

    def ready(self) -> bool:
        """Whether the full batches replay the graph (captured now if needed); False once capture failed."""
        if self.failure is not None:
            return False
        if self.graph is None or self._key != self.trainer._state_addresses():
            self._capture()
        return self.graph is not None

    def replay(self) -> None:
        self.graph.replay()

    def _capture(self) -> None:
        """Capture on a full batch (after a few eager warm-up steps on a side stream, as the PyTorch docs
        prescribe), leaving the runs' state as it was before."""
        trainer = self.trainer
        saved = [t.detach().clone() for t in trainer._state_tensors()]
        optimizer, buffers = trainer.optimizer, trainer._buffers
        started = optimizer.started
        # the momentum buffers start at zero, so buf = m * buf + g equals the first step's copy of g:
        # one captured update serves every step
        optimizer.started = True
        buffers.epoch_index.copy_(trainer.index)  # warm up on the runs' own examples (valid labels)
        buffers.epoch_weights.copy_(trainer.weights)
        try:
            stream = torch.cuda.Stream(trainer.device)
            stream.wait_stream(torch.cuda.current_stream(trainer.device))
            with torch.random.fork_rng(devices=[]):  # no trace on the host generator either
                with torch.cuda.stream(stream):  # the capture's stream (cuBLAS/cuDNN handles are per stream)
                    for _ in range(GRAPH_WARMUP_STEPS):
                        buffers.cursor.zero_()
                        trainer._step(trainer.batch_size)
                torch.cuda.current_stream(trainer.device).wait_stream(stream)
                self.graph = torch.cuda.CUDAGraph()
                optimizer.zero_grad()  # the captured backward allocates the gradients in the graph's pool
                with torch.cuda.graph(self.graph, stream=stream):
                    trainer._step(trainer.batch_size)
        except Exception as err:  # noqa: BLE001  (an op this CUDA build cannot capture: train, uncaptured)
            self.failure = f"{type(err).__name__}: {str(err).strip()[:200]}"
            warnings.warn(f"capturing the training step as a CUDA graph failed ({self.failure}); the step runs "
                          "eagerly from now on", stacklevel=4)
            self.graph, optimizer.started = None, started
            optimizer.zero_grad()
        finally:
            with torch.no_grad():
                for tensor, value in zip(trainer._state_tensors(), saved):
                    tensor.copy_(value)  # in place: the graph holds these addresses
        self._key = trainer._state_addresses()

    @contextmanager
    def own_gradients(self) -> Iterator[None]:
        """An eager step beside the captured one (it sets its own gradients): the graph's gradient tensors,
        which live in the graph's memory pool, stay referenced and are put back on the parameters after."""
        holders = self.trainer.optimizer.grad_holders
        graph_grads = [h.grad for h in holders]
        self.trainer.optimizer.zero_grad()
        try:
            yield
        finally:
            for holder, grad in zip(holders, graph_grads):
                holder.grad = grad
