"""Watch every graph call an ``EdgeSession`` makes: name, inputs, outputs and seconds.

One mechanism for what sits around a session's runners (the bench's clock, the golden reference's trace):
``observe(session, on_call)`` wraps the engine's graph runners and its LLM runner and returns a function that
puts the originals back. The LLM is reported as graph ``llm`` with inputs ``(embeds, positions)`` and outputs
``(projected, logits)``; a one-token ``embeds`` is a decode step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

OnCall = Callable[[str, list[np.ndarray], list[np.ndarray], float], None]


class _ObservedGraph:
    def __init__(self, runner: Any, name: str, on_call: OnCall) -> None:
        self.runner, self.name, self.on_call = runner, name, on_call

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        outputs = self.runner.run(*inputs)
        self.on_call(self.name, list(inputs), list(outputs), time.perf_counter() - start)
        return outputs


class _ObservedLLM:
    def __init__(self, runner: Any, on_call: OnCall) -> None:
        self.runner, self.on_call, self.chunk = runner, on_call, runner.chunk
        self.pads_chunks = runner.pads_chunks

    def step(self, embeds: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        projected, logits = self.runner.step(embeds, positions)
        self.on_call("llm", [embeds, positions], [projected, logits], time.perf_counter() - start)
        return projected, logits

    def reset(self) -> None:
        self.runner.reset()

    def snapshot(self) -> Any:
        return self.runner.snapshot()

    def restore(self, state: Any) -> None:
        self.runner.restore(state)


def observe(session: Any, on_call: OnCall) -> Callable[[], None]:
    """Report every graph call of ``session`` to ``on_call``; returns the function that stops it."""
    engine = session.engine
    graphs, llm = dict(engine.graphs), engine.llm
    engine.graphs = {name: _ObservedGraph(runner, name, on_call) for name, runner in graphs.items()}
    engine.llm = _ObservedLLM(llm, on_call)

    def stop() -> None:
        engine.graphs, engine.llm = graphs, llm

    return stop
