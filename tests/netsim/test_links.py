"""netsim's pure parts: models, and a link's ordering, loss, bandwidth, bound and partitions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.control import ControlError, NetsimState
from netsim.link import Link, LinkSettings
from netsim.models import MAX_DELAY_NS, LogNormal, ModelError, build, duration_ns, rate_bps

MS = 1_000_000


def test_units():
    assert duration_ns("2ms") == 2 * MS and duration_ns("150us") == 150_000
    assert duration_ns("1.5s") == 1_500 * MS and duration_ns(3) == 3 * MS
    assert rate_bps("10mbit") == 10_000_000 and rate_bps("1MB") == 8_000_000
    with pytest.raises(ModelError):
        duration_ns("soon")


def test_models_sample_what_they_say():
    rng = random.Random(1)
    lognormal = build({"model": "lognormal", "median": "1ms", "sigma": 0.5})
    samples = sorted(lognormal.sample(rng) for _ in range(20_000))
    assert abs(samples[10_000] - MS) < 0.03 * MS
    assert abs(samples[19_800] - LogNormal(MS, 0.5).quantile(0.99)) < 0.1 * LogNormal(MS, 0.5).quantile(0.99)
    jittered = build({"model": "constant", "latency": "1ms", "jitter": "200us"})
    js = [jittered.sample(rng) for _ in range(5_000)]
    assert min(js) >= 800_000 and max(js) <= 1_200_000
    mix = build({"model": "mixture", "parts": [[0.99, {"model": "constant", "latency": "1ms"}],
                                               [0.01, {"model": "pareto", "min": "10ms", "alpha": 3}]]})
    ms = [mix.sample(rng) for _ in range(10_000)]
    assert 0.005 < sum(1 for x in ms if x >= 10 * MS) / len(ms) < 0.015
    with pytest.raises(ModelError):
        build({"model": "gaussian-ish"})


def test_empirical_model_from_csv(tmp_path):
    path = tmp_path / "samples.csv"
    path.write_text("# one-way delays\n1ms\n2ms\n3ms\n")
    model = build({"model": "empirical", "csv": str(path)})
    rng = random.Random(2)
    assert {model.sample(rng) for _ in range(100)} == {MS, 2 * MS, 3 * MS}


def test_order_is_kept_unless_reordering_is_asked_for():
    link = Link("a->b", LinkSettings(latency={"model": "uniform", "min": "0", "max": "5ms"}))
    dues = [link.schedule(i * 100_000, 100) for i in range(500)]
    assert dues == sorted(dues)
    loose = Link("a->b", LinkSettings(latency={"model": "uniform", "min": "0", "max": "5ms"},
                                      reorder=True))
    dues = [loose.schedule(i * 100_000, 100) for i in range(500)]
    assert dues != sorted(dues)


def test_loss_is_a_retransmission_on_reliable_links_and_a_drop_on_market_data():
    reliable = Link("risk->matching", LinkSettings(loss=0.3, rto="200ms", seed=3))
    dues = [reliable.schedule(0, 10) for _ in range(1_000)]
    assert None not in dues and reliable.stats["retransmits"] > 200
    assert max(dues) >= 200 * MS
    lossy = Link("oracle->subscribers", LinkSettings(loss=0.3, seed=3), reliable=False)
    dues = [lossy.schedule(0, 10) for _ in range(1_000)]
    assert 250 < dues.count(None) < 350


def test_bandwidth_serialises_and_queues():
    link = Link("a->b", LinkSettings(bandwidth="8mbit"))  # 1 byte per microsecond
    first = link.schedule(0, 1_000)
    second = link.schedule(0, 1_000)
    assert first == 1_000_000 and second == 2_000_000


def test_queue_bound_drops_when_asked_to():
    link = Link("a->b", LinkSettings(latency={"model": "constant", "latency": "10ms"},
                                     queue_limit=5, on_full="drop"))
    dues = [link.schedule(0, 1) for _ in range(8)]
    assert dues.count(None) == 3 and link.stats["dropped"] == 3


def test_partition_holds_then_releases_in_order():
    link = Link("a->b", LinkSettings(latency={"model": "constant", "latency": "1ms"}, down=True))
    assert [link.schedule(i, 1) for i in range(10)] == [None] * 10
    link.configure(LinkSettings(latency={"model": "constant", "latency": "1ms"}))
    released = link.heal(50 * MS)
    assert [i for i, _ in released] == list(range(10))
    assert [due for _, due in released] == sorted(due for _, due in released)
    assert released[0][1] == 51 * MS


def test_controller_validates_and_versions():
    state = NetsimState()
    v = state.version
    state.handle("netsim_set", {"link": "gateway->risk", "settings": {"latency": {
        "model": "constant", "latency": "1ms"}}})
    assert state.version == v + 1 and "gateway->risk" in state.links
    with pytest.raises(ControlError):
        state.handle("netsim_set", {"link": "gateway->nowhere", "settings": {}})
    with pytest.raises(ControlError):
        state.handle("netsim_set", {"link": "risk->matching", "settings": {"loss": 2}})
    state.handle("netsim_partition", {"links": ["risk->matching"], "down": True})
    state.handle("netsim_partition", {"links": ["risk->matching"], "down": False})
    assert "risk->matching" not in state.links  # healed back to nothing: direct path again
    table = state.handle("netsim_profile", {"name": "cross-region"})
    assert len(table["links"]) == len(state.handle("netsim_show", {})["known_links"])
    state.handle("netsim_clear", {})
    assert state.links == {}


def test_only_market_data_links_reorder():
    """A reliable link models a TCP connection, which never reorders, and the nodes rely on it
    (risk reads matching's events in the order they happened): reorder is refused there, by name,
    and taken on the PUB links, where a real feed can reorder."""
    state = NetsimState()
    with pytest.raises(ControlError, match="matching->risk cannot reorder: it is a reliable link"):
        state.handle("netsim_set", {"link": "matching->risk", "settings": {"reorder": True}})
    assert state.links == {}
    state.handle("netsim_set", {"link": "matching->subscribers", "settings": {
        "latency": "1ms", "reorder": True}})
    assert state.links["matching->subscribers"]["reorder"] is True


def test_a_link_set_to_zero_takes_the_direct_path():
    import asyncio

    from netsim.shaper import Shaper

    shaper = Shaper("gateway", asyncio.new_event_loop())
    shaper.apply(1, {"gateway->risk": {"latency": {"model": "constant", "latency": "0"}},
                     "risk->matching": {"latency": {"model": "constant", "latency": "1ms"}}}, {})
    assert shaper.get("gateway->risk") is None  # zero: no shaping, no pump hop
    shaper.apply(2, {"gateway->risk": {"latency": {"model": "constant", "latency": "1ms"}}}, {})
    assert shaper.get("gateway->risk") is not None
    shaper.close()


# Any latency spec a user may type, hand-written or through --spec: well-formed and not.
_durations = st.one_of(st.sampled_from(["0", "1ms", "150us", "3600s", "99999999999s", "-1ms", "x"]),
                       st.integers(-5, 10**12), st.floats(allow_nan=True, allow_infinity=True))
_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6),
                     st.sampled_from(["3", "a", None, [1]]))
_leaf = st.fixed_dictionaries(
    {"model": st.sampled_from(["constant", "uniform", "normal", "lognormal", "pareto", "empirical",
                               "nope", 5])},
    optional={"latency": _durations, "min": _durations, "max": _durations, "mean": _durations,
              "stddev": _durations, "median": _durations, "sigma": _numbers, "alpha": _numbers,
              "jitter": _durations, "csv": st.sampled_from(["/nonexistent", "/proc/self/status"])})
_specs = st.one_of(_leaf, st.builds(lambda parts: {"model": "mixture", "parts": parts},
                                    st.lists(st.tuples(_numbers, _leaf).map(list), max_size=3)),
                   st.sampled_from([[1, 2], "1ms", {"model": "mixture", "parts": [[1, 5]]}]))


@settings(max_examples=400, deadline=None)
@given(_specs, st.integers(0, 2**32))
def test_a_model_is_refused_with_a_reason_or_samples_within_bounds(spec, seed):
    try:
        model = build(spec)
    except ModelError:
        return  # refused, with a message (the controller shows it)
    rng = random.Random(seed)
    for _ in range(200):
        assert 0 <= model.sample(rng) <= MAX_DELAY_NS


def test_extreme_but_valid_models_reach_the_cap_instead_of_failing():
    rng = random.Random(3)
    for spec in ({"model": "pareto", "min": "1ms", "alpha": 1e-9},
                 {"model": "lognormal", "median": "1ms", "sigma": 300},
                 {"model": "normal", "mean": "1ms", "stddev": "3000s"}):
        samples = [build(spec).sample(rng) for _ in range(500)]
        assert max(samples) == MAX_DELAY_NS and min(samples) >= 0


def test_the_controller_names_what_a_model_lacks_and_refuses_empty_links():
    state = NetsimState()
    cases = {
        "pareto needs 'min'": {"latency": {"model": "pareto"}},
        "mixture needs 'parts'": {"latency": {"model": "mixture"}},
        "empirical: cannot read": {"latency": {"model": "empirical", "csv": "/nonexistent"}},
        "sigma must be finite": {"latency": {"model": "lognormal", "median": "1ms",
                                             "sigma": float("nan")}},
        "bandwidth must be at least": {"bandwidth": "0"},
        "queue_limit must be at least 1": {"queue_limit": -1},
    }
    for message, settings_ in cases.items():
        with pytest.raises(ControlError, match=message):
            state.handle("netsim_set", {"link": "gateway->risk", "settings": settings_})
    assert state.links == {}


def test_a_model_that_fails_while_sending_costs_the_message_its_shaping_not_the_node():
    import asyncio

    from netsim.shaper import Shaper

    shaper = Shaper("gateway", asyncio.new_event_loop())
    shaper.apply(1, {"gateway->risk": {"latency": {"model": "constant", "latency": "1ms"}}}, {})
    link = shaper.get("gateway->risk")

    class Broken(LogNormal):
        def sample(self, rng):
            raise ArithmeticError("a model bug")

    link.model = Broken(MS, 0.5)
    errors, delivered = [], []
    shaper.on_error = lambda name, exc: errors.append((name, type(exc).__name__))
    shaper.send(link, 100, lambda: delivered.append(1))
    assert delivered == [1] and errors == [("gateway->risk", "ArithmeticError")]
    assert link.stats["errors"] == 1
    shaper.close()


def test_a_bare_duration_is_a_constant_latency():
    state = NetsimState()
    state.handle("netsim_set", {"link": "gateway->risk", "settings": {"latency": "2ms"}})
    assert state.links["gateway->risk"]["latency"] == {"model": "constant", "latency": "2ms"}
