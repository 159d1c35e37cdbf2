"""The node's lifecycle state table and start-up stamping, ROS-free (the node runs exactly these
steps)."""

import pytest

from ros_mm_perception.ros.lifecycle_table import (
    DESTROY_PUBLISHERS,
    LOAD_MODELS,
    MAKE_PUBLISHERS,
    RELEASE_MODELS,
    START_STREAMING,
    STATE_TABLE,
    STOP_STREAMING,
    TRANSITIONS,
    steps_between,
    transition_steps,
)
from ros_mm_perception.ros.startup import StampWhenClockRuns


@pytest.mark.parametrize("state, transition, target, steps", [
    ("unconfigured", "configure", "inactive", [LOAD_MODELS, MAKE_PUBLISHERS]),
    ("inactive", "activate", "active", [START_STREAMING]),
    ("active", "deactivate", "inactive", [STOP_STREAMING]),
    ("inactive", "cleanup", "unconfigured", [DESTROY_PUBLISHERS, RELEASE_MODELS]),
    ("active", "shutdown", "finalized", [STOP_STREAMING, DESTROY_PUBLISHERS, RELEASE_MODELS]),
    ("inactive", "shutdown", "finalized", [DESTROY_PUBLISHERS, RELEASE_MODELS]),
    ("unconfigured", "shutdown", "finalized", []),
])
def test_each_transition_does_only_its_own_work(state, transition, target, steps):
    assert transition_steps(state, transition) == (target, steps)


def test_deactivate_and_activate_keep_the_models_loaded():
    # resuming must not reload anything: the models stay through deactivate/activate
    for state in ("inactive", "active"):
        assert STATE_TABLE[state].models and STATE_TABLE[state].publishers
    assert STATE_TABLE["active"].streaming and not STATE_TABLE["inactive"].streaming
    assert LOAD_MODELS not in transition_steps("inactive", "activate")[1]
    assert RELEASE_MODELS not in transition_steps("active", "deactivate")[1]
    assert not any(STATE_TABLE["unconfigured"].__dict__.values())


def test_transitions_outside_the_design_are_refused():
    for state, transition in (("unconfigured", "activate"), ("active", "cleanup"),
                              ("inactive", "deactivate"), ("finalized", "configure")):
        with pytest.raises(ValueError, match="not allowed"):
            transition_steps(state, transition)


def test_steps_between_any_states_release_in_reverse_order_of_acquiring():
    order = [LOAD_MODELS, MAKE_PUBLISHERS, START_STREAMING]
    for a in STATE_TABLE:
        for b in STATE_TABLE:
            steps = steps_between(a, b)
            acquired = [s for s in steps if s in order]
            released = [s for s in steps if s not in order]
            assert acquired == sorted(acquired, key=order.index)
            assert released == sorted(released,
                                      key=[STOP_STREAMING, DESTROY_PUBLISHERS,
                                           RELEASE_MODELS].index)
            assert not (acquired and released)  # a state never both gains and loses holdings
    assert set(TRANSITIONS.values()) <= set(STATE_TABLE)


def test_label_info_stamped_zero_before_the_clock_is_published_again_once_it_runs():
    latch = StampWhenClockRuns()
    assert not latch.due(5)  # nothing published yet
    latch.published(0)  # sim time, before the first /clock
    assert not latch.due(0)  # the clock has not started: publishing again would say 0 again
    assert latch.due(1_000_000_000)
    latch.published(1_000_000_000)
    assert not latch.due(2_000_000_000)  # stamped now: once is enough
    stamped_from_start = StampWhenClockRuns()
    stamped_from_start.published(42)
    assert not stamped_from_start.due(43)
