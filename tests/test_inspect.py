"""workbench.inspect: one context manager to look inside a model while it runs.

Oracle: a tiny model whose modules emit their own inputs (and a call counter), so every captured value is known
exactly. The threaded tests are the regression test for "DNL tab fails 10 of 48 under 16 parallel clients": one
shared model, many threads, each sees only what its own ``with`` block captured.
"""
from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from workbench import inspect


class Echo(nn.Module):
    """Emits its input under ``input`` (and, lazily, ``double`` = 2 x input); returns ``input + offset``."""

    def __init__(self, offset: float = 1.0, pause: float = 0.0):
        super().__init__()
        self.offset = offset
        self.pause = pause
        self.computed = 0

    def _double(self, x):
        self.computed += 1
        return 2 * x

    def forward(self, x):
        inspect.emit(self, "input", x)
        if self.pause:
            time.sleep(self.pause)  # let other threads run between the emit and the return
        inspect.emit(self, "double", lambda: self._double(x))
        inspect.emit(self, "scale", inspect.option(self, "scale", 1.0) * x)
        return x + self.offset


class Tiny(nn.Module):
    def __init__(self, pause: float = 0.0):
        super().__init__()
        self.a = Echo(1.0, pause)
        self.b = nn.Sequential(Echo(10.0, pause), nn.Identity())

    def forward(self, x):
        return self.b(self.a(x))


def test_records_by_qualified_name():
    m = Tiny()
    x = torch.tensor([1.0, 2.0])
    with inspect.capture(m) as cap:
        y = m(x)
    assert set(cap.keys()) == {"a.input", "a.double", "a.scale", "b.0.input", "b.0.double", "b.0.scale"}
    torch.testing.assert_close(cap["a.input"], x)
    torch.testing.assert_close(cap["b.0.input"], x + 1)           # the second module sees the first's output
    torch.testing.assert_close(cap["b.0.double"], 2 * (x + 1))
    torch.testing.assert_close(y, x + 11)                          # the capture does not change the output
    assert "a.input" in cap and "c.input" not in cap
    with pytest.raises(KeyError, match="nothing was captured"):
        cap["c.input"]
    # items / select read names by pattern, in capture order
    assert [k for k, _ in cap.items("*.input")] == ["a.input", "b.0.input"]
    torch.testing.assert_close(cap.select("*.double")[1], 2 * (x + 1))


def test_the_captured_model_defines_the_names():
    """Capturing a submodule names values relative to it; the root module's own values get the bare key."""
    m = Tiny()
    with inspect.capture(m.b) as cap:
        m(torch.zeros(1))
    assert set(cap.keys()) == {"0.input", "0.double", "0.scale"}   # m.a is not part of m.b
    single = Echo()
    with inspect.capture(single, "input") as cap:
        single(torch.ones(3))
    assert cap.keys() == ["input"]


def test_patterns_select_and_unwanted_values_are_never_computed():
    m = Tiny()
    x = torch.tensor([3.0])
    with inspect.capture(m, "b.*") as cap:
        m(x)
    assert set(cap.keys()) == {"b.0.input", "b.0.double", "b.0.scale"}
    assert m.a.computed == 0 and m.b[0].computed == 1             # the lazy value of 'a' was not computed
    with inspect.capture(m, "*.input", "a.double") as cap:
        m(x)
    assert set(cap.keys()) == {"a.input", "b.0.input", "a.double"}
    assert m.a.computed == 1 and m.b[0].computed == 1
    with inspect.capture(m, "a.*") as cap:
        assert inspect.wants(m.a, "input") and not inspect.wants(m.b[0], "input")
        assert not inspect.wants(nn.Linear(1, 1), "input")        # a module of another model


def test_keep_all_keeps_every_value_in_order_and_last_keeps_one():
    m = Tiny()
    xs = [torch.tensor([float(i)]) for i in range(4)]
    with inspect.capture(m, "a.input", keep="all") as every, inspect.capture(m, "a.input") as last:
        for x in xs:
            m(x)
    assert [float(v) for v in every.all("a.input")] == [0.0, 1.0, 2.0, 3.0]
    assert [float(v) for v in last.all("a.input")] == [3.0] and float(last["a.input"]) == 3.0
    assert every.all("never.emitted") == []
    with pytest.raises(ValueError, match="keep"):
        with inspect.capture(m, keep="some"):
            pass


def test_nothing_is_captured_outside_the_with_block():
    m = Tiny()
    assert not inspect.active()
    m(torch.ones(1))                                              # no capture open: nothing computed, no error
    assert m.a.computed == 0
    with inspect.capture(m, keep="all") as cap:
        assert inspect.active()
        m(torch.ones(1))
    assert not inspect.active()
    m(torch.full((1,), 5.0))                                      # after the block: the capture is closed
    assert len(cap.all("a.input")) == 1 and float(cap["a.input"]) == 1.0
    assert m.a.computed == 1
    assert not hasattr(m.a, "_forward_hooks") or not m.a._forward_hooks   # nothing was left on the model
    # closed also when the block raises
    with pytest.raises(RuntimeError):
        with inspect.capture(m):
            raise RuntimeError("boom")
    assert not inspect.active()


def test_values_are_detached_unless_asked_and_options_reach_the_modules():
    m = Tiny()
    x = torch.ones(2, requires_grad=True)
    with inspect.capture(m, "a.input") as cap:
        m(x)
    assert not cap["a.input"].requires_grad
    with inspect.capture(m, "a.input", detach=False) as cap:
        m(x)
    assert cap["a.input"].requires_grad
    with inspect.capture(m, "*.scale", scale=3.0) as cap:
        m(torch.ones(1))
    assert float(cap["a.scale"]) == 3.0 and float(cap["b.0.scale"]) == 6.0   # b sees 1 + 1 = 2
    assert inspect.option(m.a, "scale", "default") == "default"               # outside: the default


def test_two_models_never_mix_and_nested_captures_both_record():
    m1, m2 = Tiny(), Tiny()
    with inspect.capture(m1, keep="all") as c1, inspect.capture(m2, keep="all") as c2:
        m1(torch.zeros(1))
        m2(torch.ones(1))
        m2(torch.ones(1))
    assert len(c1.all("a.input")) == 1 and float(c1["a.input"]) == 0.0
    assert len(c2.all("a.input")) == 2 and float(c2["a.input"]) == 1.0
    with inspect.capture(m1, "a.input") as outer:
        with inspect.capture(m1, "b.*") as inner:
            m1(torch.full((1,), 7.0))
    assert outer.keys() == ["a.input"] and float(outer["a.input"]) == 7.0
    assert set(inner.keys()) == {"b.0.input", "b.0.double", "b.0.scale"}


def test_states_are_per_capture_scratch_space():
    m = Tiny()
    with inspect.capture(m) as c1:
        inspect.states(m.a)[0]["n"] = 1
        with inspect.capture(m) as c2:
            states = inspect.states(m.a)
            assert len(states) == 2 and states[0] is c1.state(m.a) and states[1] is c2.state(m.a)
            assert states[1] == {}
    assert inspect.states(m.a) == []


@pytest.mark.parametrize("rounds", [3])
def test_sixteen_threads_on_one_shared_model_see_only_their_own_values(rounds):
    """16 threads run one shared model at once (released together by a barrier): 12 with captures of
    different patterns and keep modes, 4 without any. Each capture holds exactly its own thread's inputs."""
    model = Tiny(pause=0.002)
    n = 16
    barrier = threading.Barrier(n)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(i: int):
        try:
            xs = [torch.full((3,), float(100 * i + r)) for r in range(rounds)]
            barrier.wait(timeout=30)
            if i % 4 == 3:                                       # no capture at all
                ys = [model(x) for x in xs]
                results[i] = ("none", ys, xs)
                return
            pattern = ("a.input", "*.input", "b.*")[i % 4]
            keep = "all" if i % 2 else "last"
            with inspect.capture(model, pattern, keep=keep, scale=float(i)) as cap:
                ys = [model(x) for x in xs]
                time.sleep(0.001)
            results[i] = (pattern, cap, xs, keep, ys)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == n
    for i, res in results.items():
        if res[0] == "none":
            _, ys, xs = res
            for x, y in zip(xs, ys):
                torch.testing.assert_close(y, x + 11)
            continue
        pattern, cap, xs, keep, ys = res
        for x, y in zip(xs, ys):
            torch.testing.assert_close(y, x + 11)
        expected = {"a.input": {"a.input"}, "*.input": {"a.input", "b.0.input"},
                    "b.*": {"b.0.input", "b.0.double", "b.0.scale"}}[pattern]
        assert set(cap.keys()) == expected, (i, cap.keys())
        want_a = xs if keep == "all" else xs[-1:]
        if "a.input" in expected:
            got = cap.all("a.input")
            assert len(got) == len(want_a) and all(torch.equal(g, w) for g, w in zip(got, want_a)), (i, got)
        if "b.0.input" in expected:
            got = cap.all("b.0.input")
            assert all(torch.equal(g, w + 1) for g, w in zip(got, want_a)), (i, got)
        if "b.0.scale" in expected:                               # the option of this thread's capture only
            torch.testing.assert_close(cap["b.0.scale"], float(i) * (xs[-1] + 1))


def test_threads_capturing_the_same_names_do_not_see_each_other():
    """The same pattern in every thread (the DNL tab's case: every request asks for the same block's maps)."""
    model = Tiny(pause=0.001)
    n = 16
    barrier = threading.Barrier(n)
    seen: dict[int, list[float]] = {}

    def work(i):
        barrier.wait(timeout=30)
        with inspect.capture(model, "a.input", keep="all") as cap:
            for r in range(5):
                model(torch.tensor([float(i * 10 + r)]))
        seen[i] = [float(v) for v in cap.all("a.input")]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == {i: [float(i * 10 + r) for r in range(5)] for i in range(n)}
