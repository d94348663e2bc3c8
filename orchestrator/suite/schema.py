"""The suite file: typed, frozen pydantic models, validated once at the edge.

The workload kinds and their parameters are declared once, in `kinds`; the `Workload` union
is built from that registry. `fields` has the sweepable field types both use.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from orchestrator.suite.fields import (
    Fraction,
    Frozen,
    NonNegInt,
    PosInt,
    Seconds,
    Size,
    Sweep,
    nonempty_distinct,
)
from orchestrator.suite.kernel_choice import IMAGE_KERNEL, KernelSpec, guest_names
from orchestrator.suite.kinds import KINDS, Kind, Params
from orchestrator.suite.reference import Reference

# Compiled by pydantic's Rust regex engine, which knows \z (end of text) but not Python's \Z;
# `$` would also end the match before a trailing newline in Python's engine.
NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,62}\z"


class RequestedMode(StrEnum):
    """The paging mode a suite asks for (what a row finally carries is verified separately)."""

    NATIVE = "native"  # on the lab host itself, no virtualization
    TDP = "tdp"  # two-dimensional paging: Intel EPT / AMD NPT, TDP MMU
    SHADOW = "shadow"  # KVM's shadow MMU (ept=0 / npt=0)
    TDP_LEGACY = "tdp-legacy"  # TDP with kvm.tdp_mmu=0 (the legacy MMU walking the TDP tables)


class AccelChoice(StrEnum):
    AUTO = "auto"  # KVM where usable, else TCG with a loud label and warning
    KVM = "kvm"  # refuse to run guests without KVM
    TCG = "tcg"  # always TCG (functional checks; timings are not comparable)


class ImageKind(StrEnum):
    """The guest images a suite may name (orchestrator.guests.images builds them)."""

    MINI = "mini"
    DEBIAN = "debian"


# ---- guests, tracing, timeouts, host preparation ---------------------------------------------


# x86's COMMAND_LINE_SIZE is 2048 bytes with the terminating NUL. guest.py appends its own
# arguments after the suite's: console/panic/quiet, the image's boot_args and the run's SSH key
# in base64 (about 210 bytes together today); the reserve leaves room for them to grow.
KERNEL_CMDLINE_MAX = 2047
CMDLINE_RESERVE = 512
CMDLINE_MAX = KERNEL_CMDLINE_MAX - CMDLINE_RESERVE


def _kernel_cmdline(value: str) -> str:
    control = next((c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
    if control is not None:
        raise ValueError(f"cmdline contains the control character {control!r}: the kernel "
                         "takes one line of printable words")
    if value.count('"') % 2:
        # the kernel would read everything after it, the orchestrator's own arguments too,
        # as one quoted value: the guest would never get its SSH key
        raise ValueError("cmdline has an unmatched double quote")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > CMDLINE_MAX:
        raise ValueError(f"cmdline is {size} bytes, over the {CMDLINE_MAX} left for it (the "
                         f"kernel takes {KERNEL_CMDLINE_MAX}, the orchestrator appends its own)")
    return value


class GuestHugepages(StrEnum):
    NONE = "none"
    H2M = "2M"
    H1G = "1G"


class Guest(Frozen):
    image: Annotated[str, Field(min_length=1)] = "mini"
    vcpus: Annotated[int, Field(ge=1, le=256)] = 1
    memory: Size = 1 << 30
    hugepages: GuestHugepages = GuestHugepages.NONE
    cmdline: Annotated[str, AfterValidator(_kernel_cmdline)] = ""
    cpu_pins: tuple[NonNegInt, ...] | None = None  # host CPUs for vCPU i = cpu_pins[i]
    # who starts the guest: libvirt, or QEMU directly (needed by `migrate`: libvirt refuses a
    # same-host migration); auto = $ORCH_GUEST_LAUNCHER, else libvirt
    launcher: Literal["auto", "libvirt", "qemu"] = "auto"
    # KVM's dirty ring instead of its dirty bitmap: entries per vCPU (a power of two from
    # 1024 to 65536), 0 = off. `dirty-log` then measures in QEMU's dirty-ring mode.
    dirty_ring: NonNegInt = 0
    # the kernel it boots: the image's own, a Debian package, a local .deb or a built kernel;
    # a list sweeps it (one guest per kernel, see kernel_choice.guest_names)
    kernel: Sweep[KernelSpec] = (IMAGE_KERNEL,)


    @field_validator("dirty_ring")
    @classmethod
    def _ring_size(cls, value: int) -> int:
        if value and (value & (value - 1) or not 1024 <= value <= 65536):
            raise ValueError("dirty_ring must be 0 (off) or a power of two from 1024 to 65536")
        return value

    @field_validator("memory")
    @classmethod
    def _memory_sane(cls, value: int) -> int:
        if value < 128 << 20 or value % (1 << 20):
            raise ValueError("guest memory must be a whole number of MiB and at least 128MiB")
        return value

    @model_validator(mode="after")
    def _pins_match_vcpus(self) -> Guest:
        if self.cpu_pins is not None and len(self.cpu_pins) != self.vcpus:
            raise ValueError(f"cpu_pins names {len(self.cpu_pins)} CPUs for {self.vcpus} vCPUs")
        return self


# A part may not start with `-`: perf would read the name as an option. \Z, not `$`, which also
# matches before a trailing newline.
_EVENT_PART = r"[A-Za-z0-9_*?][A-Za-z0-9_*?-]*"
EVENT_RE = re.compile(rf"{_EVENT_PART}(:{_EVENT_PART})?\Z")


def _event_name(name: str) -> str:
    if not EVENT_RE.match(name):
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
        raise ValueError(f"{shown} is not an event name like 'kvm:kvm_exit' or 'kvmmmu:*'")
    return name


def _listed_once(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError("an event is listed twice")
    return values


# checked one by one, so each bad name is reported at its own position
EventList = Annotated[tuple[Annotated[str, AfterValidator(_event_name)], ...],
                      AfterValidator(_listed_once)]


class TraceSpec(Frozen):
    host: EventList = ()
    guest: EventList = ()
    # also record the host tracepoints of each point's first measured trial with trace-cmd,
    # into the run's captures/ directory (`trace-cmd report FILE` lists the events)
    capture: bool = False
    # capture on the TSC clock, and put the guest's tracepoints of that trial (traced in the
    # guest with tracefs) on the host's timeline: captures/<trial>.timeline.parquet
    timeline: bool = False


class Timeouts(Frozen):
    boot: Seconds = 300.0
    trial: Seconds = 120.0


class ThpMode(StrEnum):
    ALWAYS = "always"
    MADVISE = "madvise"
    NEVER = "never"


class HostPrep(Frozen):
    """Conditions to measure under. Recorded always; applied (and undone) only if apply=true."""

    apply: bool = False
    thp: ThpMode | None = None
    hugepages_2m: NonNegInt | None = None
    # written into cpufreq's sysfs files as root: a governor's name, nothing else
    governor: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}\z")] | None = None


# ---- workloads: one model per registered kind ------------------------------------------------


class PrecisionTarget(Frozen):
    """`trials: {min: 5, max: 50, ci_halfwidth: 2%}`: a point runs trials until the exact 95 %
    interval of its metric's median is within ci_halfwidth of the median (relative), with at
    least `min` measured ok trials, or until `max` trials ran."""

    min: PosInt
    max: PosInt
    ci_halfwidth: Fraction
    metric: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}\z")] | None = None

    @field_validator("ci_halfwidth")
    @classmethod
    def _proper_fraction(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"ci_halfwidth {value:g} must lie between 0 and 1 (e.g. 2% or 0.02)")
        return value

    @model_validator(mode="after")
    def _min_within_max(self) -> PrecisionTarget:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self


def _trials_form(value: Any) -> str:
    return "target" if isinstance(value, dict | PrecisionTarget) else "count"


# A count of trials, or a precision target (a mapping); each form reports its own errors only.
Trials = Annotated[Annotated[PosInt, Tag("count")] | Annotated[PrecisionTarget, Tag("target")],
                   Discriminator(_trials_form)]


class WorkloadBase(Frozen):
    name: Annotated[str, Field(pattern=NAME_RE)]
    trials: Trials = 5
    warmup: NonNegInt = 1
    trace: TraceSpec | None = None  # overrides the suite's event sets for this workload
    timeout: Seconds | None = None  # overrides timeouts.trial
    # pin the measuring process (and the children it forks) to this CPU of the host or guest
    cpu: NonNegInt | None = None
    kind: str  # narrowed to one kind's name by each model below
    params: Params

    @property
    def max_trials(self) -> int:
        """Measured trials per point at most: the count, or a precision target's max."""
        return self.trials.max if isinstance(self.trials, PrecisionTarget) else self.trials

    @model_validator(mode="after")
    def _target_metric_is_reported(self) -> WorkloadBase:
        """A target on a metric the kind never reports would never be met: every point would
        run its max trials, silently."""
        target = self.trials
        kind = KINDS.get(self.kind)
        if isinstance(target, PrecisionTarget) and target.metric and kind and kind.metrics \
                and target.metric not in kind.metrics:
            raise ValueError(f"trials.metric {target.metric!r}: a {self.kind} trial reports no "
                             f"such metric (it reports {', '.join(kind.metrics)})")
        return self


def _workload_model(kind: Kind) -> type[WorkloadBase]:
    """`kind: <name>` with its `params:`, which may be left out when every one has a default."""
    optional = not any(f.is_required() for f in kind.params.model_fields.values())
    return create_model(
        "".join(word.capitalize() for word in kind.name.split("-")),  # e.g. ForkDirty
        __base__=WorkloadBase, __module__=__name__,
        kind=(Literal[kind.name], ...),  # type: ignore[arg-type]
        params=(kind.params, kind.params() if optional else ...),
    )


WORKLOAD_MODELS = tuple(_workload_model(kind) for kind in KINDS.values())
WORKLOAD_KINDS = tuple(KINDS)
if TYPE_CHECKING:
    Workload = WorkloadBase
else:
    Workload = Annotated[Union[WORKLOAD_MODELS], Field(discriminator="kind")]  # noqa: UP007


class TrialOrder(StrEnum):
    """The order of a guest's trials (plan.group_cells)."""

    CONTIGUOUS = "contiguous"  # each point's trials together, warm-ups first, points in order
    # round k runs trial k of every point, the points shuffled in each round: slow drift
    # (heat, a neighbour's load, a filling page cache) spreads over all points alike
    INTERLEAVED = "interleaved"


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


class Suite(Frozen):
    name: Annotated[str, Field(pattern=NAME_RE)]
    description: str = ""
    paging: Annotated[tuple[RequestedMode, ...], AfterValidator(nonempty_distinct)]
    accel: AccelChoice = AccelChoice.AUTO
    guests: dict[Annotated[str, Field(pattern=NAME_RE)], Guest] = {}
    workloads: tuple[Workload, ...]
    trace: TraceSpec = TraceSpec()
    timeouts: Timeouts = Timeouts()
    # a trial whose guest stopped answering runs again in a fresh guest, at most this often
    # (every attempt stays in the journal; the tables keep the last): for emulated labs
    lost_guest_retries: Annotated[int, Field(ge=0, le=2)] = 0
    host_prep: HostPrep = HostPrep()
    order: TrialOrder = TrialOrder.CONTIGUOUS
    order_seed: int = 0  # seeds interleaved's shuffles: the same seed, the same order
    reference: tuple[Reference, ...] = ()  # the source thread's published figures

    @model_validator(mode="after")
    def _references_name_what_is_measured(self) -> Suite:
        workloads = {w.name: w for w in self.workloads}
        for ref in self.reference:
            workload = workloads.get(ref.workload)
            if workload is None:
                raise ValueError(f"reference of seed {ref.seed} names workload "
                                 f"{ref.workload!r}, which the suite does not have "
                                 f"(it has {sorted(workloads)})")
            params = workload.params.model_dump()
            for name in [n for n in [ref.axis, *(r.param for r in ref.ratios)] if n]:
                if name not in params:
                    raise ValueError(f"reference of seed {ref.seed}: workload {workload.name!r} "
                                     f"has no parameter {name!r} (it has {sorted(params)})")
            for ratio in ref.ratios:
                values = {str(v) for v in _listed(params[ratio.param])}
                for end in (ratio.numerator, ratio.denominator):
                    if str(end) not in values:
                        raise ValueError(f"reference of seed {ref.seed}: {ratio.param}={end} is "
                                         f"not measured (the suite sweeps {sorted(values)})")
        return self

    @field_validator("workloads")
    @classmethod
    def _unique_workload_names(cls, workloads: tuple[WorkloadBase, ...]) -> tuple[Any, ...]:
        # checked here, not with min_length, so a bad item does not also report "empty"
        if not workloads:
            raise ValueError("no workloads: a suite needs at least one")
        seen: set[str] = set()
        for workload in workloads:
            if workload.name in seen:
                raise ValueError(f"two workloads are named {workload.name!r}")
            seen.add(workload.name)
        return workloads

    @model_validator(mode="after")
    def _pinned_cpus_exist_in_every_guest(self) -> Suite:
        if any(m is not RequestedMode.NATIVE for m in self.paging):
            for workload in self.workloads:
                for name, guest in self.guests.items():
                    if workload.cpu is not None and workload.cpu >= guest.vcpus:
                        raise ValueError(
                            f"workload {workload.name!r} is pinned to cpu {workload.cpu}, but "
                            f"guest {name!r} has {guest.vcpus} vCPU(s) (cpus count from 0)")
        return self

    @model_validator(mode="after")
    def _kernel_sweeps_name_guests(self) -> Suite:
        guest_names(self.guests)  # raises on a name a sweep would make twice or too long
        return self

    @model_validator(mode="after")
    def _guests_for_virtual_modes(self) -> Suite:
        virtual = [m for m in self.paging if m is not RequestedMode.NATIVE]
        if virtual and not self.guests:
            raise ValueError(
                f"paging modes {[m.value for m in virtual]} run in guests, but no guests are "
                "defined (add e.g. `guests: {small: {image: mini}}`)"
            )
        return self
