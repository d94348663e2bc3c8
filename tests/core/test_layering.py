"""The data path flows one way: each stage imports only the stages below it (ARCHITECTURE.md),
readers of tables never reach for guests, proc needs no one."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

# Lowest first: a module may import its own package and the ones listed before it, never one
# after it (lazy imports inside functions count too). ARCHITECTURE.md draws the same order.
# `model` (the plain record types) is below everything: it imports nothing of ours.
ORDER = ["model", "median", "errors", "proc", "paths", "settings", "store", "suite", "host", "guests",
         "workloads", "tracing", "run", "analysis", "lab", "fleet", "site", "cli"]
# The faces at the top of the package: each hands on one stage's names.
FACES = {"results": {"model", "store"}, "nightly": {"fleet"}}
GUEST_SIDE = ("libvirt", "libvirt_qemu", "paramiko", "qemu", "orchestrator.guests",
              "orchestrator.run", "orchestrator.lab")
HEAVY = ("libvirt", "libvirt_qemu", "paramiko", "qemu")
TABLE_LIBRARIES = ("pandas", "pyarrow")


def imports_of(module: Path) -> set[str]:
    """Every module named by an import anywhere in the file (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def stage_of(name: str) -> str | None:
    """'orchestrator.store.reader.load' -> 'store'; None for what is not ours."""
    parts = name.split(".")
    if parts[0] != "orchestrator" or len(parts) < 2:
        return None
    return parts[1]


def modules_of(stage: str) -> list[Path]:
    folder = PACKAGE / stage
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{stage}.py"]


def test_every_module_belongs_to_a_stage() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert top | folders == set(ORDER) | set(FACES)


@pytest.mark.parametrize("stage", ORDER)
def test_imports_point_down(stage: str) -> None:
    allowed = set(ORDER[:ORDER.index(stage) + 1])
    bad = {f"{m.relative_to(PACKAGE)}: {name}" for m in modules_of(stage)
           for name in imports_of(m) if (s := stage_of(name)) and s not in allowed}
    assert not bad, f"{stage} imports a stage above it: {sorted(bad)}"


@pytest.mark.parametrize("face", sorted(FACES))
def test_faces_hand_on_one_stage(face: str) -> None:
    stages = {s for name in imports_of(PACKAGE / f"{face}.py") if (s := stage_of(name))}
    assert stages <= FACES[face]


@pytest.mark.parametrize("stage", ["store", "analysis"])
def test_table_readers_never_import_guest_machinery(stage: str) -> None:
    bad = {f"{m.relative_to(PACKAGE)}: {name}" for m in modules_of(stage)
           for name in imports_of(m)
           if any(name == g or name.startswith(g + ".") for g in GUEST_SIDE)}
    assert not bad, f"{stage} imports {sorted(bad)}"


def test_analysis_reads_only_the_store() -> None:
    stages = {s for m in modules_of("analysis") for name in imports_of(m)
              if (s := stage_of(name))}
    assert stages <= {"model", "median", "errors", "store", "analysis"}


def test_proc_imports_nothing_of_the_package_but_errors() -> None:
    ours = {i for i in imports_of(PACKAGE / "proc.py") if i.startswith("orchestrator")}
    assert ours <= {"orchestrator.errors", "orchestrator.errors.HarnessError"}


def test_model_imports_nothing_of_the_package() -> None:
    assert not {i for i in imports_of(PACKAGE / "model.py") if i.startswith("orchestrator")}


def loaded_by(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules under `prefixes` that importing `modules` loads, in a fresh interpreter."""
    code = (f"import importlib, json, sys\nfor name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_the_model_loads_no_table_libraries() -> None:
    """The record types travel through adapters, tracers and the executor: no pandas, no
    pyarrow (nor does the run directory or the journal, which a run's writer appends to)."""
    assert loaded_by(["orchestrator.model"], TABLE_LIBRARIES) == []
    assert loaded_by(["orchestrator.store.rundir", "orchestrator.store.journal"],
                     TABLE_LIBRARIES) == []


def test_suite_knows_nothing_of_hosts_or_guests() -> None:
    stages = {s for m in modules_of("suite") for name in imports_of(m) if (s := stage_of(name))}
    assert stages <= {"errors", "suite"}


def test_importing_the_readers_loads_no_guest_machinery() -> None:
    """What `from orchestrator import results` or a report pulls in, measured in a fresh
    interpreter: no libvirt, paramiko or QEMU (a pandas user on a laptop has none of them)."""
    readers = ["orchestrator.results", "orchestrator.model",
               *(f"orchestrator.{m.parent.name}.{m.stem}"
                 for stage in ("store", "analysis") for m in modules_of(stage)
                 if m.stem != "__init__"),
               "orchestrator.analysis"]
    assert loaded_by(readers, HEAVY) == []


# Launcher bindings, SSH and table libraries: none is needed to run a plan's trials.
EXECUTOR_MUST_NOT_LOAD = ("libvirt", "libvirt_qemu", "paramiko", "qemu.qmp", "pandas", "pyarrow")


@pytest.fixture(scope="module")
def executor_modules() -> set[str]:
    """sys.modules after `import orchestrator.run.execute` in a fresh interpreter, run from
    this checkout."""
    code = ("import json, sys\nimport orchestrator.run.execute\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, cwd=PACKAGE.parent)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("heavy", EXECUTOR_MUST_NOT_LOAD)
def test_importing_the_executor_loads_no_launcher_ssh_or_tables(
        executor_modules: set[str], heavy: str) -> None:
    """The executor names no launcher: libvirt or QEMU's QMP load only when a guest of that
    launcher boots (guest.launch), paramiko only with a guest's session."""
    assert not {m for m in executor_modules if m == heavy or m.startswith(heavy + ".")}
