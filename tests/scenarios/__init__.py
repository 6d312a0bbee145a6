"""Scenarios more than one tier runs: plain functions that take the DynamoDB client (and what else
they drive) and assert what must hold. tests/unit runs them on the in-memory twin, tests/server on
moto over HTTP (and, for the KCL child, on a real child process), each through one parametrized
test per module; the scenario's name is the test's id, and says what must hold."""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import pytest


class Scenarios(dict):
    """Scenarios by name. `@scenarios.add` registers a function under its name;
    `@scenarios.grid(name=values, ...)` registers one case per combination of the values."""

    def add(self, function: Callable[..., None]) -> Callable[..., None]:
        self[function.__name__] = function
        return function

    def grid(self, **values: tuple) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(function: Callable[..., None]) -> Callable[..., None]:
            for combination in itertools.product(*values.values()):
                case = "-".join(",".join(v) if isinstance(v, tuple) else str(v) for v in combination)
                self[f"{function.__name__}:{case}"] = functools.partial(function, **dict(zip(values, combination)))
            return function

        return register

    def params(self) -> list[Any]:
        """Every scenario as a pytest parameter named after it."""
        return [pytest.param(scenario, id=name) for name, scenario in self.items()]
