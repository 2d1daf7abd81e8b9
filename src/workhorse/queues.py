"""Which queues a worker fetches from, and in which order for each fetch."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from workhorse.errors import ConfigurationError


def parse_queues(spec: Mapping[str, int] | Iterable[str] | str | None,
                 default: Iterable[str]) -> dict[str, int]:
    """Queue weights from a mapping, a list (weight 1 each), ``"a=10,b=1"`` or None (the
    ``default`` queues, weight 1 each)."""
    if spec is None:
        return {queue: 1 for queue in sorted(set(default))}
    if isinstance(spec, str):
        weights: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            queue, _, weight_text = part.partition("=")
            try:
                weights[queue.strip()] = int(weight_text) if weight_text else 1
            except ValueError:
                raise ConfigurationError(f"queue weight in {part!r} is not an integer") from None
        spec = weights
    elif not isinstance(spec, Mapping):
        spec = {queue: 1 for queue in spec}
    if not spec:
        raise ConfigurationError("a worker needs at least one queue")
    for name, weight in spec.items():
        if not name or not isinstance(weight, int) or weight < 1:
            raise ConfigurationError(f"queue {name!r} needs a name and an integer weight >= 1")
    return dict(spec)


def weighted_order(weights: Mapping[str, int], rng: random.Random | None = None) -> list[str]:
    """All queues in a random order where heavier queues tend to come first.

    A queue of weight w is first with probability w / total, as in gocraft/work's sampling;
    empty queues are skipped by the store, so a light queue is fetched whenever the heavier
    ones are empty. (Weighted sampling without replacement by Efraimidis-Spirakis keys.)
    """
    draw = (rng or random).random
    return sorted(weights, key=lambda q: draw() ** (1.0 / weights[q]), reverse=True)
