"""Test cases: which adapter on which device in which dtype, and building layers for them.

A case is parametrized by the pytest plugin (bnsuite/plugin.py); tests get it as the `case` fixture and build layers
with `case.build(spec)`.
"""

from __future__ import annotations

import dataclasses

import pytest

from bnsuite.adapters.base import BatchNormAdapter, Declaration, Spec, Unsupported


@dataclasses.dataclass(frozen=True)
class Case:
    adapter: type[BatchNormAdapter]
    device: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.adapter.id}-{self.device}-{self.dtype}"

    @property
    def decl(self) -> Declaration:
        return self.adapter.declare()

    def spec(self, **fields) -> Spec:
        return Spec(dtype=self.dtype, device=self.device, **fields)

    def build(self, spec: Spec) -> BatchNormAdapter:
        """Build a layer; an adapter's declared inability becomes a skip with its reason."""
        try:
            return self.adapter(spec)
        except Unsupported as e:
            self.skip_refused(e)

    def skip_refused(self, e: Exception):
        """Skip with the adapter's refusal as its reason, the adapter named once (the message may start with its id)."""
        __tracebackhide__ = True
        reason = str(e)
        pytest.skip(reason if reason.startswith(f"{self.adapter.id}:") else f"{self.adapter.id}: {reason}")

    def build_declared(self, rec, prop: str, cited, spec: Spec) -> BatchNormAdapter:
        """Build a layer for a capability the adapter declares (`cited`): its refusal (Unsupported) FAILS the check
        `prop`, since a declared thing that cannot run never turns into a skip."""
        from bnsuite.suites import checks as ch

        try:
            return self.adapter(spec)
        except Unsupported as e:
            ch.equal(rec, prop, cited.value, f"refused: {e}", source=cited.source)
            raise

    def needs(self, field: str, what: str):
        """The declared value of `field` (a Cited); the test skips, citing the declaration, where it is falsy."""
        cited = getattr(self.decl, field)
        if not cited.value:
            pytest.skip(f"{self.adapter.id} declares no {what} ({cited.source})")
        return cited

    def layer(self, rec, **fields):
        """The usual start of a test: a layer built from spec fields, its snippet on the recorder, the seeded
        non-trivial state loaded, and the seeded batch. Returns (spec, layer, state, x)."""
        from bnsuite.suites import data, repro

        spec = self.spec(**fields)
        bn = self.build(spec)
        rec.snippet = bn.snippet()
        rec.layer_code = repro.adapter_setup(spec, self.adapter)  # a failure's script calls the same layer
        st = data.state(spec)
        bn.set_state(st)
        return spec, bn, st, data.batch(spec)


# Ranks and layouts of the layout-parametrized tests; rank 2 has a single layout.
LAYOUTS = [(2, False), (3, False), (3, True), (4, False), (4, True), (5, False), (5, True)]


def layout_id(rank_layout) -> str:
    rank, cl = rank_layout
    return Spec(rank=rank, channels_last=cl).layout


def freeze_step_of(case: Case, idiom: str):
    """The adapter's implementation (FreezeIdiom) of a declared freeze idiom; the case FAILS where the adapter's
    freeze_idioms lacks it (a declared idiom that cannot run is a failure, never a skip)."""
    __tracebackhide__ = True
    implemented = case.adapter.freeze_idioms.get(idiom)
    if implemented is None:
        pytest.fail(f"{case.adapter.id}: declared freeze idiom {idiom!r} is not implemented (not in the adapter's "
                    f"freeze_idioms: {sorted(case.adapter.freeze_idioms)})", pytrace=False)
    return implemented


def declared_params(case: Case, field: str, none_id: str, what: str) -> list:
    """The idioms the case's adapter declares in Declaration.<field>, as parameters joint with the case (a suite's
    PER_CASE); one case that skips saying so where it declares none (not pytest's anonymous empty parameter set)."""
    names = getattr(case.adapter.declare(), field)
    return [pytest.param(n, id=n) for n in names] or [pytest.param(None, id=none_id, marks=pytest.mark.skip(
        reason=f"{case.adapter.id} declares no {what} (Declaration.{field} is empty)"))]


def freeze_params(case: Case) -> list:
    return declared_params(case, "freeze", "no-idiom", "freeze idioms")
