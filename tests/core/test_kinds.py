"""The registry of workload kinds (suite/kinds.py) is the one place a kind is declared: the
schema, the adapters, the host drivers, the tracer's defaults and the Makefile agree with it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from orchestrator.suite.kinds import KINDS, Kind, Params
from orchestrator.suite.schema import EVENT_RE, WORKLOAD_KINDS, WORKLOAD_MODELS
from orchestrator.tracing.perf import DEFAULT_GUEST, DEFAULT_HOST, with_defaults
from orchestrator.workloads import adapters, dirty

WORKLOADS = Path(__file__).resolve().parents[2] / "guest-workloads"
EVERY_KIND = pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))


def makefile_programs() -> set[str]:
    text = (WORKLOADS / "Makefile").read_text()
    found = re.search(r"^PROGRAMS\s*:=(.*)$", text, re.MULTILINE)
    assert found, "guest-workloads/Makefile lists no PROGRAMS"
    return set(found.group(1).split())


@EVERY_KIND
def test_a_kind_has_parameters_and_a_program_the_makefile_builds(kind: Kind) -> None:
    assert issubclass(kind.params, Params)
    if kind.binary is None:  # an outside tool: its adapter is in adapters.TOOLS
        assert kind.name in adapters.TOOLS and not kind.host_assisted
    else:
        assert kind.binary in makefile_programs()
        assert (WORKLOADS / "src" / f"{kind.binary}.c").is_file()


def test_the_schema_accepts_exactly_the_registered_kinds_with_their_parameters() -> None:
    assert WORKLOAD_KINDS == tuple(KINDS)
    models = {get_args(m.model_fields["kind"].annotation)[0]: m for m in WORKLOAD_MODELS}
    assert list(models) == list(KINDS)
    for name, model in models.items():
        assert model.model_fields["params"].annotation is KINDS[name].params


@EVERY_KIND
def test_the_adapters_run_the_registered_program(kind: Kind) -> None:
    if kind.host_assisted:
        with pytest.raises(ValueError, match="no adapter"):
            adapters.command(kind.name, {}, "/bin-dir")
    elif kind.binary is not None:
        assert adapters.command(kind.name, {}, "/bin-dir")[0] == f"/bin-dir/{kind.binary}"


def test_outside_tools_and_host_drivers_are_those_of_registered_kinds() -> None:
    assert set(adapters.TOOLS) == {k.name for k in KINDS.values() if k.binary is None}
    assert set(dirty.DRIVERS) == {k.name for k in KINDS.values() if k.host_assisted}


@EVERY_KIND
def test_default_events_are_the_tracers_and_the_kinds_own(kind: Kind) -> None:
    for event in (*kind.guest_events, *kind.host_events):
        assert EVENT_RE.match(event), event
    base = () if kind.host_assisted else DEFAULT_GUEST  # no single guest process to count
    assert with_defaults(["default"], "guest", kind.name) == [*base, *kind.guest_events]
    assert with_defaults(["default"], "host", kind.name) == [*DEFAULT_HOST, *kind.host_events]


@EVERY_KIND
def test_a_kind_declares_its_metrics_with_its_primary_one_among_them(kind: Kind) -> None:
    """What a precision target's `metric:` is checked against (the programs' own output is
    compared with these lists in tests/workloads/test_binaries.py)."""
    assert kind.primary_metric in kind.metrics
    assert len(set(kind.metrics)) == len(kind.metrics)
