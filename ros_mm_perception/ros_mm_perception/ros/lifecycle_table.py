"""The node's lifecycle state table (ROS-free): what each managed-node state holds, and the steps
between.

| state        | models            | publishers   | inputs + worker | publishes                |
|--------------|-------------------|--------------|-----------------|--------------------------|
| unconfigured | no                | no           | no              | /diagnostics only        |
| inactive     | loaded, warmed up | yes (silent) | no              | /diagnostics, label_info |
| active       | loaded            | yes          | yes             | every output             |
| finalized    | no                | no           | no              | nothing                  |

``configure`` loads (and warms up) the models and makes the publishers (label_info latched),
``activate`` only subscribes to the inputs and starts the worker, so resuming costs no model load;
``deactivate`` stops the subscriptions and the worker and keeps the models; ``cleanup`` releases
the models and their GPU memory. Services exist in every state and answer ``success=false`` while
no models are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


@dataclass(frozen=True)
class Holdings:
    """What a state holds."""

    models: bool
    publishers: bool
    streaming: bool
    """Input subscriptions and the inference worker."""


STATE_TABLE: Dict[str, Holdings] = {
    "unconfigured": Holdings(models=False, publishers=False, streaming=False),
    "inactive": Holdings(models=True, publishers=True, streaming=False),
    "active": Holdings(models=True, publishers=True, streaming=True),
    "finalized": Holdings(models=False, publishers=False, streaming=False),
}

TRANSITIONS: Dict[Tuple[str, str], str] = {
    ("unconfigured", "configure"): "inactive",
    ("inactive", "cleanup"): "unconfigured",
    ("inactive", "activate"): "active",
    ("active", "deactivate"): "inactive",
    **{(state, "shutdown"): "finalized" for state in ("unconfigured", "inactive", "active")},
}
"""(state, transition) → the state it leads to, as in the ROS 2 managed-node design."""

LOAD_MODELS, RELEASE_MODELS = "load_models", "release_models"
MAKE_PUBLISHERS, DESTROY_PUBLISHERS = "make_publishers", "destroy_publishers"
START_STREAMING, STOP_STREAMING = "start_streaming", "stop_streaming"


def steps_between(current: str, target: str) -> List[str]:
    """The work that takes the holdings of ``current`` to those of ``target``, in a safe order.

    Streams stop before publishers go and publishers before models; models load before publishers
    and publishers before streams start.
    """
    have, want = STATE_TABLE[current], STATE_TABLE[target]
    steps = []
    if have.streaming and not want.streaming:
        steps.append(STOP_STREAMING)
    if have.publishers and not want.publishers:
        steps.append(DESTROY_PUBLISHERS)
    if have.models and not want.models:
        steps.append(RELEASE_MODELS)
    if want.models and not have.models:
        steps.append(LOAD_MODELS)
    if want.publishers and not have.publishers:
        steps.append(MAKE_PUBLISHERS)
    if want.streaming and not have.streaming:
        steps.append(START_STREAMING)
    return steps


def transition_steps(current: str, transition: str) -> Tuple[str, List[str]]:
    """``(next state, steps)`` for ``transition`` from ``current``; ValueError if the design does
    not allow it."""
    target = TRANSITIONS.get((current, transition))
    if target is None:
        raise ValueError(f"transition {transition!r} is not allowed from state {current!r}")
    return target, steps_between(current, target)
