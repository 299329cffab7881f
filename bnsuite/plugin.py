"""The bnsuite pytest plugin: adapter selection, case parametrization, results recording.

Settings that change what runs (adapters, devices, results file, KERAS_BACKEND, TF_USE_LEGACY_KERAS) are printed in
the pytest header, to catch typos.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections import Counter, defaultdict

import pytest

from bnsuite.adapters import capabilities, frameworks, registry
from bnsuite.adapters.base import Unsupported
from bnsuite.reports.results import ResultsWriter
from bnsuite.suites.cases import Case
from bnsuite.suites.checks import Recorder
from bnsuite.suites import summaries
from bnsuite import plugin_options as opts

# Per-case timeouts, "started" records and resuming a group after a crashed case (bnsuite/plugin_faults.py).
pytest_plugins = ["bnsuite.plugin_faults"]

# JAX compiles every new shape (and Keras-on-JAX every eager op); a persistent on-disk cache turns the second run of
# the jax groups from ~30 s of XLA compilation into seconds. Set before any adapter imports jax.
# A checkout keeps it in .cache/jax; an installed bnsuite in the user's cache folder ($XDG_CACHE_HOME/bnsuite/jax).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_USER_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(_CHECKOUT, ".cache", "jax")
                      if os.path.isfile(os.path.join(_CHECKOUT, "requirements", "all.txt")) else
                      os.path.join(_USER_CACHE, "bnsuite", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

DEVICES = ("cpu", "gpu")
FAMILIES = frameworks.families()  # the -m markers of the framework rows (bnsuite/adapters/frameworks.py)
# The process switches the built-in adapters name (KERAS_BACKEND, TF_USE_LEGACY_KERAS) and the suite's own.
ENV_SHOWN = (*dict.fromkeys(k for i in registry.BUILTIN for k in registry.load(i).process_env), registry.ENV_VAR,
             "BNSUITE_DEVICE", "BNSUITE_RESULTS")


def pytest_addoption(parser):
    g = parser.getgroup("bnsuite", "BatchNorm conformance suite")
    g.addoption("--adapter", action="append", default=[], metavar="ID|module:Class",
                help=f"adapter to test (repeatable): a built-in id ({', '.join(registry.BUILTIN)}) or an importable "
                     f"'package.module:ClassName'. Default: all built-in ones; env {registry.ENV_VAR} does the same.")
    g.addoption("--device", action="append", default=[], metavar="cpu|gpu",
                help="device(s) to parametrize (repeatable). Default: the devices visible to each adapter's framework "
                     "(the header names the others); a device named here but not visible skips with that reason. "
                     "Env BNSUITE_DEVICE does the same.")
    g.addoption("--results", default=None, metavar="PATH",
                help="results file (JSON lines) to append to; 'none' disables. Default: env BNSUITE_RESULTS or "
                     "results/run-<time>-<pid>.jsonl")
    g.addoption("--bn-seed", default=None, metavar="N",
                help="data seed: a non-negative integer that moves every seeded input of the suites to other data "
                     "(0, the default, is CI's data). Env BNSUITE_SEED does the same.")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist and Hypothesis act on their options
def pytest_configure(config):
    opts.refuse_xdist(config)
    try:  # the findings declarations load here, so a malformed file is one usage-error line, not a traceback
        import bnsuite.findings  # noqa: F401
    except ValueError as e:  # FindingsError
        raise pytest.UsageError(str(e)) from None
    config._bn_hypothesis = opts.hypothesis_profile(config)
    for fam in FAMILIES:
        config.addinivalue_line("markers", f"{fam}: cases of adapters built on {fam}")
    config.addinivalue_line("markers", "cpu: cases on the CPU")
    config.addinivalue_line("markers", "gpu: cases on a GPU (skipped with a reason where none is visible)")
    config.addinivalue_line("markers", "dtypes(*names): dtypes a test is parametrized over (default float32)")
    config.addinivalue_line("markers", "reproductions: meta tests that run every findings/<name>.py (slow: imports "
                                       "every framework); deselect with -m 'not reproductions'")
    for adapter_id in registry.BUILTIN:
        config.addinivalue_line("markers", f"{adapter_id}: cases of the {adapter_id} adapter")

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # adapter paths resolve from the current directory, as under `python -m pytest`
    refs = config.getoption("--adapter") or [r for r in os.environ.get(registry.ENV_VAR, "").split(",") if r]
    try:
        config._bn_adapters = registry.load_all(refs)
    except registry.AdapterLoadError as e:
        raise pytest.UsageError(str(e)) from None
    for cls in config._bn_adapters:  # a family no framework row names would be a marker -m cannot select
        unknown = [f for f in cls.families if f not in FAMILIES]
        if unknown:
            raise pytest.UsageError(f"adapter {cls.id!r} names the family {unknown[0]!r}, which no framework row "
                                    f"(bnsuite/adapters/frameworks.py) names; known: {', '.join(FAMILIES)}")
    devices = config.getoption("--device") or [d for d in os.environ.get("BNSUITE_DEVICE", "").split(",") if d]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown:
        raise pytest.UsageError(f"unknown device {unknown[0]!r}: use one of {', '.join(DEVICES)}")
    config._bn_devices = tuple(devices) or DEVICES
    config._bn_seed = _data_seed(config)
    config._bn_adapter_devices, config._bn_hidden_devices = ({}, {}) if devices else \
        opts.visible_devices(config._bn_adapters, DEVICES)

    path = config.getoption("--results") or os.environ.get("BNSUITE_RESULTS")
    lazy = path is None
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join("results", f"run-{stamp}-{os.getpid()}.jsonl")
    config._bn_writer = None
    is_worker = hasattr(config, "workerinput")
    if path.lower() != "none" and not is_worker and not config.getoption("collectonly"):
        try:
            config._bn_writer = opts.LazyResultsWriter(path, ResultsWriter) if lazy else ResultsWriter(path)
        except OSError as e:
            raise pytest.UsageError(f"cannot write results file {path!r}: {e.strerror}") from None
    if config._bn_writer is not None and not config.getoption("--bn-resume"):  # a resumed run has them already
        config._bn_writer.write(
            "env", group=os.environ.get("BNSUITE_GROUP", ""), python=sys.version.split()[0],
            platform=platform.platform(), argv=sys.argv[1:], started=datetime.datetime.now().isoformat(),
            env={k: os.environ.get(k) for k in ENV_SHOWN}, versions={}, numeric={}, seed=config._bn_seed)
        for cls in config._bn_adapters:
            write_declaration(config._bn_writer, cls)
        write_findings(config._bn_writer)
    config._bn_seen_adapters = set()
    config._bn_outcomes = defaultdict(Counter)
    config._bn_skip_reasons = Counter()


def _data_seed(config) -> int:
    """--bn-seed (else env BNSUITE_SEED, else 0), validated and exported to the environment, where suites/data.py
    (and every process this one starts) reads it."""
    from bnsuite.suites.data import SEED_ENV

    raw = config.getoption("--bn-seed")
    raw = os.environ.get(SEED_ENV, "0") if raw is None else raw
    try:
        seed = int(raw or 0)
    except ValueError:
        seed = -1
    if seed < 0:
        raise pytest.UsageError(f"--bn-seed / {SEED_ENV}: expected a non-negative integer, got {raw!r}")
    os.environ[SEED_ENV] = str(seed)
    return seed


def write_declaration(writer, cls) -> None:
    import dataclasses

    decl = cls.declare()
    from bnsuite.suites.replica_cases import replica_declaration_record

    builtin = list(registry.BUILTIN)
    writer.write("declaration", adapter=cls.id, adapter_class=f"{cls.__module__}:{cls.__qualname__}",
                 unavailable=cls.unavailable_reason(), declaration=dataclasses.asdict(decl),
                 replicas=replica_declaration_record(cls),
                 # the report's column order: built-in adapters in registry order, then the user's
                 position=builtin.index(cls.id) if cls.id in builtin else len(builtin),
                 families=list(cls.families))


def write_findings(writer) -> None:
    """The declared findings, so that the report (which reads only results files) can list them."""
    from bnsuite import findings

    for rec in findings.records():
        writer.write("finding", **rec)


def pytest_unconfigure(config):
    w = getattr(config, "_bn_writer", None)
    if w is not None:
        w.close()


def pytest_report_header(config):
    lines = []
    for cls in config._bn_adapters:
        why = cls.unavailable_reason()
        lines.append(f"  {cls.id:18s} {'runs here' if why is None else 'SKIPPED: ' + why}")
    env = ", ".join(f"{k}={os.environ[k]}" for k in ENV_SHOWN if k in os.environ) or "(none set)"
    w = config._bn_writer
    return (["bnsuite adapters:"] + lines +
            [opts.devices_header(not config._bn_adapter_devices, config._bn_devices, config._bn_hidden_devices),
             f"bnsuite hypothesis profile: {config._bn_hypothesis}", f"bnsuite env: {env}",
             f"bnsuite data seed: {config._bn_seed}" + (" (CI's data)" if config._bn_seed == 0 else
                                                         " (rerun on other data: --bn-seed / BNSUITE_SEED)"),
             f"bnsuite results: {w.path if w else 'not written'}"])


def _case_params(config, dtypes):
    params = []
    for cls in config._bn_adapters:
        why = cls.unavailable_reason()
        for device in config._bn_adapter_devices.get(cls.id, config._bn_devices):
            for dtype in dtypes:
                case = Case(cls, device, dtype)
                marks = [getattr(pytest.mark, fam) for fam in cls.families] + [getattr(pytest.mark, device)]
                if cls.id in registry.BUILTIN:
                    marks.append(getattr(pytest.mark, cls.id))
                if why is not None:
                    marks.append(pytest.mark.skip(reason=f"{cls.id}: {why}"))
                elif dtype not in cls.supported_dtypes():
                    marks.append(pytest.mark.skip(reason=f"{cls.id}: dtype {dtype} not declared supported"))
                params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.hookimpl(tryfirst=True)  # before a suite's own parametrization: the case leads the id ([torch-cpu-float32-...])
def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("dtypes")
    dtypes = marker.args if marker else ("float32",)
    params = _case_params(metafunc.config, dtypes)
    # Values that depend on the case (freeze idioms, replica idioms, deploy routes, ...): a suite module names them in
    # PER_CASE = {fixture: fn(case) -> [pytest.param(value, id=...)]}; they are parametrized jointly with the case, so
    # no case exists for a value its adapter does not declare.
    per_case = getattr(metafunc.module, "PER_CASE", {})
    name = next((n for n in per_case if n in metafunc.fixturenames), None)
    if name is None:
        metafunc.parametrize("case", params, indirect=True)
        return
    joint = [pytest.param(p.values[0], q.values[0], id=f"{p.id}-{q.id}", marks=[*p.marks, *q.marks])
             for p in params for q in per_case[name](p.values[0])]
    metafunc.parametrize(("case", name), joint, indirect=["case"])


def _case_of(item) -> Case | None:
    case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
    return case if isinstance(case, Case) else None


def pytest_collection_finish(session):
    """Import what must come first, and start the multi-replica workers the selected cases will read in the
    background (see replica_cases.prefetch): their engines' start-up overlaps the other suites."""
    if session.config.getoption("collectonly"):
        return
    # Only the frameworks of the selected cases are imported (`-k torch` imports no paddle), in a safe order.
    frameworks.import_early(list(dict.fromkeys(c.adapter for c in map(_case_of, session.items) if c is not None)))
    refs: list[str] = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = params.get("case")
        ref = capabilities.named(case.adapter).get("replicas") if isinstance(case, Case) else None
        if ref and "replica_idiom" in params and case.adapter.unavailable_reason() is None and ref not in refs:
            refs.append(ref)
    if refs:
        from bnsuite.suites import replica_cases

        replica_cases.prefetch(refs)


@pytest.fixture
def case(request):
    c: Case = request.param
    why = c.adapter.device_unavailable_reason(c.device)
    if why is not None:
        pytest.skip(f"{c.adapter.id}: {why}")
    return c


@pytest.fixture
def rec(request, case) -> Recorder:
    config = request.config
    writer = config._bn_writer
    if case.adapter.id not in config._bn_seen_adapters:
        config._bn_seen_adapters.add(case.adapter.id)
        numeric = numeric_settings(case.adapter)  # applied whether or not a results file is written
        if writer is not None:
            try:
                versions = case.adapter.versions()
            except Exception as e:  # a broken install must not lose the run
                versions = {"error": f"{type(e).__name__}: {e}"}
            writer.write("env", group=os.environ.get("BNSUITE_GROUP", ""), adapter=case.adapter.id,
                         versions=versions, numeric=numeric)
    r = Recorder(writer, test=request.node.nodeid, adapter=case.adapter.id, device=case.device,
                 dtype=case.dtype, repro=repro_command(request.node.nodeid, case.adapter))
    r.base["area"] = area_of(request.node.nodeid)  # the report groups its rows by it
    return r


def area_of(nodeid: str) -> str:
    """The semantic area of a test: its module's name without the test_ prefix (test_freeze.py -> freeze)."""
    module = nodeid.split("::")[0].rsplit("/", 1)[-1]
    return module.removesuffix(".py").removeprefix("test_")


def numeric_settings(cls) -> dict:
    """Turn off TF32 and similar reduced-precision modes so numbers compare with the float64 oracle."""
    hook = getattr(cls, "numeric_settings", None)
    return hook() if hook else {}


def repro_command(nodeid: str, cls) -> str:
    env = " ".join(f"{k}={v}" for k, v in cls.process_env.items())
    adapter = "" if cls.id in registry.BUILTIN else f" --adapter {cls.__module__}:{cls.__qualname__}"
    return f"{env + ' ' if env else ''}python -m pytest '{nodeid}'{adapter} -p no:cacheprovider"


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """Every check of a test is recorded and judged, even after an earlier one fails: the test fails once, at the
    end, with all messages (so a broken momentum does not hide a broken estimator checked after it)."""
    __tracebackhide__ = True
    rec = pyfuncitem.funcargs.get("rec")
    try:
        if not isinstance(rec, Recorder):
            return (yield)
        with rec.together():
            result = yield
        return result
    except capabilities.CapabilityBroken as e:  # a capability the adapter names cannot be loaded: the case fails
        pytest.fail(str(e), pytrace=False)
    except Unsupported as e:
        skip_unsupported(rec, e)


def skip_unsupported(rec, e: Exception) -> None:
    """An optional capability the adapter lacks (it raised Unsupported mid-test) skips the case with its reason,
    unless a check recorded before it already failed: that failure stands, with the reason the test stopped."""
    __tracebackhide__ = True
    failed = [c["message"] for c in getattr(rec, "checks", []) if not c.get("passed", True)]
    if failed:
        raise AssertionError("\n".join(failed + [f"(then stopped: {type(e).__name__}: {e})"]))
    pytest.skip(f"unsupported: {e}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "setup":  # a case's time includes its set-up (a module fixture's lands on its first case)
        item._bn_setup_s = report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        outcome = report.outcome if report.when == "call" or report.skipped else "error"
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2]
        elif report.failed:
            reason = (report.longreprtext or "").strip().splitlines()[-1][:500] if report.longreprtext else ""
        adapter = case.adapter.id if isinstance(case, Case) else ""
        item.config._bn_outcomes[adapter][outcome] += 1
        if outcome == "skipped":
            item.config._bn_skip_reasons[reason] += 1
        w = item.config._bn_writer
        if w is not None:
            w.write("outcome", test=item.nodeid, area=area_of(item.nodeid), adapter=adapter,
                    device=getattr(case, "device", ""),
                    dtype=getattr(case, "dtype", ""), outcome=outcome, reason=reason,
                    seconds=round(report.duration + (item._bn_setup_s if report.when == "call" else 0.0), 3),
                    repro=repro_command(item.nodeid, case.adapter) if isinstance(case, Case) else "")
    return report


def pytest_terminal_summary(terminalreporter, config):
    outcomes = getattr(config, "_bn_outcomes", {})
    if not outcomes:
        return
    tr = terminalreporter
    tr.section("bnsuite: cases per adapter")
    for adapter, counts in sorted(outcomes.items()):
        tr.write_line(f"  {adapter or '(no adapter)':18s} " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for line in opts.skip_summary_lines(config._bn_skip_reasons):
        tr.write_line(line)
    if config._bn_writer is not None and getattr(config._bn_writer, "opened", True):
        tr.write_line(f"  results: {config._bn_writer.path}")
    for hook in summaries.SUMMARY_HOOKS:
        hook(tr, config)
