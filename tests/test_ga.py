"""GA operators: the radius/charge filter, the mutations and start generator inside a real ase_ga loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_llmgen.ga import radii
from ase_llmgen.ga.operators import (
    LLMInfillMutation,
    LLMRegenerationMutation,
    LLMStartGenerator,
    UniformSubstitution,
    fit_to_numbers,
    guard_distance,
    provenance_pairs,
)

EMT_METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "ga_llm_search.py"


def _parent(atoms: Atoms, confid: int = 7) -> Atoms:
    atoms.info["confid"] = confid
    return atoms


def _cu3au() -> Atoms:
    """L1_2 Cu3Au, 4 atoms, Au first (the order a model might write)."""
    return Atoms(
        "AuCu3", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], cell=[3.75] * 3, pbc=True
    )


class FakeInfill:
    """Stands in for a Sampler: ``infill`` answers fixed symbols and records its calls."""

    def __init__(self, answers, raises: bool = False):
        self.answers, self.raises, self.calls = list(answers), raises, []

    def infill(self, masked_text, n, elements=None):
        self.calls.append((masked_text, n, elements))
        if self.raises:
            raise RuntimeError("model exploded")
        return list(self.answers)


@dataclass
class FakeSettings:
    """The fields of SampleSettings the operators read (without importing torch)."""

    batch_size: int = 4
    max_atoms: int = 20
    elements: tuple | None = None
    min_distance: float = 0.0


class FakeGenerator:
    """Stands in for a Sampler: ``iter_structures`` yields copies of fixed structures, batch by batch."""

    def __init__(self, structures, batch_size: int = 4):
        self.structures = structures
        self.settings = FakeSettings(batch_size=batch_size)
        self.seen: list = []  # (conditions, settings) per batch

    def iter_structures(self, conditions=None, stats=None, accept=None, max_draws=None):
        while max_draws is None or stats.drawn < max_draws:
            self.seen.append((conditions, self.settings))
            for i in range(self.settings.batch_size):
                stats.drawn += 1
                atoms = self.structures[i % len(self.structures)].copy()
                if accept is None or accept(atoms):
                    stats.accepted += 1
                    # As the real Sampler: provenance is added after acceptance.
                    atoms.info.update({"model": "fake", "conditions": conditions.as_dict(), "text": "..."})
                    yield atoms


# ---------------------------------------------------------------- radii


def test_radius_table_and_similar_substitutes():
    table = radii.radius_table()
    assert table[("Na", 1)] == pytest.approx(1.16) and table[("Mg", 2)] == pytest.approx(0.86)
    assert table[("Cu", 0)] == pytest.approx(1.28)  # metals in state 0: metallic radius
    mg = radii.similar_substitutes("Mg", 2)
    assert {"Zn", "Co", "Ni", "Fe"} <= set(mg) and "Ba" not in mg and "Mg" not in mg
    # Na+ (1.16 A) and K+ (1.52 A) differ by 0.36 A: not similar at the paper's 0.1 A, similar at 0.4 A.
    assert "K" not in radii.similar_substitutes("Na", 1)
    assert "K" in radii.similar_substitutes("Na", 1, tolerance=0.4)
    assert "Ba" not in radii.similar_substitutes("Na", 1, tolerance=1.0)  # no Ba+ at all
    assert radii.similar_substitutes("Cu", 0, elements=EMT_METALS) == ["Ni", "Pd"]
    assert radii.similar_substitutes("Xx", 1) == [] and radii.radius("O", 0) is None


def test_oxidation_state_guesses_and_charge_balance():
    assert radii.guess_oxidation_states(bulk("NaCl", "rocksalt", a=5.64)) == {"Na": 1, "Cl": -1}
    assert radii.guess_oxidation_states("Cu3Au") == {"Cu": 0, "Au": 0}  # all metals: neutral atoms
    assert radii.guess_oxidation_states("Fe3O4")["Fe"] == pytest.approx(8 / 3)  # mixed valence: the average
    assert radii.guess_oxidation_states(["Na", "Cl", "Cl"]) is None
    assert radii.charge_balanced(["Na", "Cl"]) and radii.charge_balanced({"Sr": 1, "Ti": 1, "O": 3})
    assert not radii.charge_balanced({"Ba": 1, "Cl": 1}) and not radii.charge_balanced("NaCl2")


# ---------------------------------------------------------------- infill filter (fake sampler)


def test_infill_substitutes_similar_radius_same_state():
    nacl = _parent(bulk("NaCl", "rocksalt", a=5.64))
    op = LLMInfillMutation(FakeInfill(["K"] * 4), tolerance=0.4, rng=np.random.RandomState(0))
    child, desc = op.get_new_individual([nacl])
    assert child.get_chemical_formula() == "ClK" and desc == "mutation: LLMInfillMutation Na->K"
    assert np.allclose(child.positions, nacl.positions) and np.allclose(child.cell, nacl.cell)
    kvp = child.info["key_value_pairs"]
    assert kvp["origin"] == "LLMInfillMutation" and kvp["substitution"] == "Na->K" and kvp["oxidation_state"] == 1
    assert child.info["data"]["parents"] == [7]
    # Every proposal was for a masked element of the paper's text: one [MASK] line per masked site.
    masked, n, _ = op.sampler.calls[-1]
    assert n == 16 and masked.split("\n")[2] == "[MASK]" and "Cl" in masked


def test_infill_writes_the_parent_in_the_models_site_order():
    """A model trained on spatially sorted sites (bundle.site_order) is asked with a sorted parent."""
    parent = _parent(bulk("MgO", "rocksalt", a=4.21, cubic=True))
    parent.positions += 0.3  # off the origin, so the input's order is not already sorted

    def coordinate_lines(site_order):
        sampler = FakeInfill(["Zn"] * 4)
        sampler.bundle = SimpleNamespace(site_order=site_order)
        LLMInfillMutation(sampler, rng=np.random.RandomState(0)).get_new_individual([parent])
        return [tuple(map(float, line.split())) for line in sampler.calls[-1][0].split("\n")[3::2]]

    spatial, as_read = coordinate_lines("spatial"), coordinate_lines("as_read")
    assert spatial == sorted(spatial) and as_read != sorted(as_read)
    assert sorted(spatial) == sorted(as_read)


@pytest.mark.parametrize("answer, tolerance", [("K", 0.1), ("Ba", 0.4), ("Na", 0.4)])
def test_infill_rejects_dissimilar_or_other_state(answer, tolerance):
    op = LLMInfillMutation(FakeInfill([answer] * 4), tolerance=tolerance, rng=np.random.RandomState(0))
    child, desc = op.get_new_individual([_parent(bulk("NaCl", "rocksalt", a=5.64))])
    assert child is None and desc.count(":") == 1 and desc.startswith("mutation: LLMInfillMutation failed")
    assert op.counts["offspring"] == 0


def test_infill_default_tolerance_mgo_and_counts():
    mgo = _parent(bulk("MgO", "rocksalt", a=4.21))
    op = LLMInfillMutation(FakeInfill(["Zn", "Ba", "Mg", "Zn"]), rng=np.random.RandomState(0))
    child, desc = op.get_new_individual([mgo])
    assert child.get_chemical_formula() == "OZn" and desc.endswith("Mg->Zn")
    # O has no substitute within 0.1 A, so only Mg is masked (no wasted model call).
    assert len(op.sampler.calls) == 1
    assert op.counts["qualified"] == 2 and op.counts["rejected: same element"] == 1
    assert op.counts["rejected: radius or oxidation state"] == 1


def test_infill_charge_balance_is_checked():
    class Permissive(LLMInfillMutation):
        def candidates(self, atoms, element, state):
            # Pretend Ba qualified by radius on the Na site: charge balance must still reject BaCl.
            return ["Ba"] if element == "Na" else []

    op = Permissive(FakeInfill(["Ba"]), rng=np.random.RandomState(0))
    assert op.mutate(bulk("NaCl", "rocksalt", a=5.64)) is None
    assert op.counts["rejected: charge balance"] > 0


def test_infill_never_crashes_on_model_errors_or_unbalanced_parents():
    op = LLMInfillMutation(FakeInfill([], raises=True), rng=np.random.RandomState(0))
    child, desc = op.get_new_individual([_parent(bulk("MgO", "rocksalt", a=4.21))])
    assert child is None and desc.count(":") == 1 and op.counts["model errors"] == 3
    odd = _parent(Atoms("NaCl2", scaled_positions=[[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]], cell=[5] * 3, pbc=True))
    child, desc = LLMInfillMutation(FakeInfill(["K"])).get_new_individual([odd])
    assert child is None and "oxidation states" in desc


def test_uniform_substitution_is_seeded_and_valid():
    mgo = _parent(bulk("MgO", "rocksalt", a=4.21))
    runs = []
    for _ in range(2):
        op = UniformSubstitution(rng=np.random.RandomState(3))
        runs.append([op.get_new_individual([mgo])[0].get_chemical_formula() for _ in range(5)])
    assert runs[0] == runs[1]
    for formula in runs[0]:
        new = formula.replace("O", "")
        assert new in radii.similar_substitutes("Mg", 2) and radii.charge_balanced(formula)
    child, desc = UniformSubstitution(rng=np.random.RandomState(0)).get_new_individual([mgo])
    assert desc.startswith("mutation: UniformSubstitution Mg->")
    assert child.info["key_value_pairs"]["source"] == "uniform"
    assert UniformSubstitution().get_new_individual([_parent(bulk("NaCl", "rocksalt", a=5.64))])[0] is None


# ---------------------------------------------------------------- composition fitting, regeneration, start


def test_fit_to_numbers_orders_and_builds_supercells():
    numbers = [29] * 6 + [79] * 2
    child = fit_to_numbers(_cu3au(), numbers)
    assert child.numbers.tolist() == numbers and child.get_volume() == pytest.approx(2 * 3.75**3)
    interleaved = [29, 79, 29, 29]
    assert fit_to_numbers(_cu3au(), interleaved).numbers.tolist() == interleaved
    assert fit_to_numbers(_cu3au(), numbers, allow_supercells=False) is None
    assert fit_to_numbers(_cu3au(), [29] * 4 + [79] * 4) is None  # CuAu is not Cu3Au
    assert fit_to_numbers(_cu3au(), [29] * 5 + [79] * 2) is None


def test_regeneration_keeps_parent_composition_and_order():
    parent = _parent(
        Atoms(
            "Cu6Au2", scaled_positions=np.random.RandomState(0).random_sample((8, 3)), cell=[3.75, 3.75, 7.5], pbc=True
        )
    )
    wrong = Atoms("Cu2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[3] * 3, pbc=True)
    fake = FakeGenerator([wrong, _cu3au()], batch_size=4)
    op = LLMRegenerationMutation(fake, use_spacegroup=True, max_draws=8, rng=np.random.RandomState(0))
    child, desc = op.get_new_individual([parent])
    assert child.numbers.tolist() == parent.numbers.tolist() and desc == "mutation: LLMRegenerationMutation Cu3Au"
    conditions, settings = fake.seen[0]
    assert conditions.formula == "Cu3Au" and conditions.spacegroup is not None
    assert settings.elements == ("Au", "Cu") and settings.max_atoms == 8  # decoding restricted while sampling
    assert fake.settings.elements is None and fake.settings.max_atoms == 20  # and restored after
    kvp = child.info["key_value_pairs"]
    assert kvp["origin"] == "LLMRegenerationMutation" and kvp["req_formula"] == "Cu3Au" and kvp["model"] == "fake"
    assert child.info["data"]["text"] == "..." and child.info["model"] == "fake"
    assert child.info["data"]["parents"] == [7]
    # Two hits per batch: the second is kept for the next call (no new batch drawn).
    batches = len(fake.seen)
    assert op.mutate(parent) is not None and len(fake.seen) == batches
    # Nothing with the composition: a reason, not an exception.
    op = LLMRegenerationMutation(FakeGenerator([wrong]), max_draws=8)
    child, desc = op.get_new_individual([parent])
    assert child is None and "no sample of Cu3Au in 8 draws" in desc and desc.count(":") == 1


def test_start_generator_stoichiometry_budget_and_fallback():
    fake = FakeGenerator([_cu3au()], batch_size=2)
    gen = LLMStartGenerator(fake, stoichiometry="Cu6Au2")
    atoms = gen.get_new_candidate()
    assert atoms.numbers.tolist() == [29] * 6 + [79] * 2 and atoms.info["source"] == "llm"
    assert provenance_pairs(atoms) == {"model": "fake", "task": "generate", "source": "llm", "req_formula": "Cu3Au"}
    # Sodium nitride's formula reads as a float; ASE db (and so ase_ga) must still take it.
    nitride = Atoms("NaN", info={"conditions": {"formula": "NaN"}})
    assert provenance_pairs(nitride) == {"req_formula": "Na1N1"}
    order = [79, 29, 29, 29]
    assert LLMStartGenerator(fake, stoichiometry=order).get_new_candidate().numbers.tolist() == order

    wrong = FakeGenerator([Atoms("Cu", cell=[2.5] * 3, pbc=True)], batch_size=2)
    assert LLMStartGenerator(wrong, stoichiometry="CuAu").get_new_candidate(maxiter=4) is None
    with pytest.raises(RuntimeError, match="fallback"):
        LLMStartGenerator(wrong, stoichiometry="CuAu", max_draws=4).get_new_candidate()

    class Classic:
        def get_new_candidate(self, maxiter=None):
            return Atoms("CuAu", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[3] * 3, pbc=True)

    atoms = LLMStartGenerator(wrong, stoichiometry="CuAu", max_draws=4, fallback=Classic()).get_new_candidate()
    assert atoms.info["source"] == "fallback"


def test_blmin_raises_the_samplers_distance_guard_while_drawing():
    from ase_ga.utilities import closest_distances_generator

    blmin = closest_distances_generator([29, 79, 8], ratio_of_covalent_radii=0.7)
    cu_au = min(blmin[(a, b)] for a in (29, 79) for b in (29, 79))
    assert guard_distance(blmin, [29, 29, 79]) == pytest.approx(cu_au)  # O's pairs do not count
    assert guard_distance(None, [29]) is None

    fake = FakeGenerator([_cu3au()], batch_size=2)
    LLMStartGenerator(fake, stoichiometry="Cu3Au", blmin=blmin).get_new_candidate()
    assert cu_au > 0.5 and fake.seen[0][1].min_distance == pytest.approx(cu_au)
    assert fake.settings.min_distance == 0.0  # restored afterwards
    regen = LLMRegenerationMutation(fake, blmin=blmin)
    assert regen.mutate(_cu3au()) is not None and fake.seen[-1][1].min_distance == pytest.approx(cu_au)

    fake.settings = FakeSettings(min_distance=2.5)  # a user's larger guard is kept
    LLMStartGenerator(fake, stoichiometry="Cu3Au", blmin=blmin).get_new_candidate()
    assert fake.seen[-1][1].min_distance == 2.5
    LLMStartGenerator(fake, stoichiometry="Cu3Au").get_new_candidate()  # no blmin: no change
    assert fake.seen[-1][1].min_distance == 2.5


# ---------------------------------------------------------------- a real ase_ga loop with a tiny model


class _Distinct:
    """A comparator that calls no two structures alike (compositions differ after substitutions)."""

    def looks_like(self, a1, a2):
        return False


def _score(atoms: Atoms) -> None:
    atoms.calc = EMT()  # a single point is enough to rank candidates here
    atoms.info["key_value_pairs"]["raw_score"] = -atoms.get_potential_energy() / len(atoms)


def test_operators_inside_real_ase_ga(tmp_path, tiny_bundle):
    from ase.data import atomic_numbers
    from ase_ga.data import DataConnection, PrepareDB
    from ase_ga.offspring_creator import CombinationMutation, OperationSelector
    from ase_ga.population import Population
    from ase_ga.standardmutations import StrainMutation
    from ase_ga.startgenerator import StartGenerator
    from ase_ga.utilities import CellBounds, closest_distances_generator

    from ase_llmgen.sampling.sampler import Sampler, SampleSettings

    settings = SampleSettings(temperature=1.0, top_p=1.0, batch_size=8, max_atoms=4, elements=EMT_METALS)
    sampler = Sampler(tiny_bundle, settings, seed=0)
    rng = np.random.RandomState(0)
    numbers = [29, 29, 79, 79]
    blmin = closest_distances_generator([atomic_numbers[s] for s in EMT_METALS], 0.6)
    bounds = CellBounds(
        bounds={"phi": [30, 150], "chi": [30, 150], "psi": [30, 150], "a": [2, 30], "b": [2, 30], "c": [2, 30]}
    )
    slab = Atoms("", pbc=True)
    classic = StartGenerator(
        slab, numbers, blmin, box_volume=60, number_of_variable_cell_vectors=3, cellbounds=bounds, rng=rng
    )
    starter = LLMStartGenerator(sampler, numbers, blmin=blmin, cellbounds=bounds, max_draws=8, fallback=classic)
    db = str(tmp_path / "ga.db")
    prep = PrepareDB(db, simulation_cell=slab, stoichiometry=numbers)
    for _ in range(4):
        candidate = starter.get_new_candidate()
        assert candidate.numbers.tolist() == numbers
        prep.add_unrelaxed_candidate(candidate, **provenance_pairs(candidate))
    da = DataConnection(db)
    while da.get_number_of_unrelaxed_candidates() > 0:
        a = da.get_an_unrelaxed_candidate()
        _score(a)
        da.add_relaxed_step(a)

    infill = LLMInfillMutation(sampler, n_candidates=8, rng=rng)
    assert infill.elements == tuple(sorted(EMT_METALS))  # the sampler's element restriction carries over
    regenerate = LLMRegenerationMutation(sampler, max_draws=8, rng=rng)
    strain_infill = CombinationMutation(StrainMutation(blmin, cellbounds=bounds, rng=rng), infill)
    ops = OperationSelector(
        [2, 1, 1, 1], [infill, UniformSubstitution(elements=EMT_METALS, rng=rng), regenerate, strain_infill], rng=rng
    )
    population = Population(da, 4, _Distinct(), rng=rng)
    made = []
    for _ in range(6):
        a1, a2 = population.get_two_candidates()
        child, desc = ops.get_new_individual([a1, a2])
        assert desc.count(":") == 1
        if child is None:
            continue
        assert child.info["data"]["parents"] == [a1.info["confid"]] and len(child) == len(a1)
        da.add_unrelaxed_candidate(child, description=desc)
        _score(child)
        da.add_relaxed_step(child)
        population.update()
        made.append(child.info["key_value_pairs"]["origin"])
    assert "LLMInfillMutation" in made  # the tiny model's random metals often fall within 0.1 A
    rows = list(da.c.select(relaxed=1, origin="LLMInfillMutation"))
    assert rows and all(r.model == tiny_bundle.name and r.task == "infill" and "->" in r.substitution for r in rows)
    assert infill.counts["proposed"] >= infill.counts["qualified"] > 0


def test_registered_mutators(tiny_model_dir):
    from ase_llmgen.plugins import mutators

    known = mutators()
    assert {"llm_infill", "uniform_substitution", "llm_regeneration"} <= set(known)
    op = known["llm_infill"].factory(model=str(tiny_model_dir), temperature=0.9, seed=3, tolerance=0.2)
    assert isinstance(op, LLMInfillMutation) and op.tolerance == 0.2 and op.sampler.settings.temperature == 0.9
    regen = known["llm_regeneration"].factory(model=str(tiny_model_dir), use_spacegroup=True, batch_size=4)
    assert isinstance(regen, LLMRegenerationMutation) and regen.sampler.settings.batch_size == 4
    # The CLI passes model/temperature/seed to every operator: the baseline ignores the model ones.
    uniform = known["uniform_substitution"].factory(model="default", temperature=0.7, seed=0)
    child, _ = uniform.get_new_individual([_parent(bulk("MgO", "rocksalt", a=4.21))])
    assert child is not None


def test_example_quick_mode(tmp_path, tiny_model_dir, monkeypatch):
    """docs/examples/ga_llm_search.py --quick runs end to end and its database answers ase db queries."""
    import importlib.util

    from ase.db import connect

    spec = importlib.util.spec_from_file_location("ga_llm_search", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ga_llm_search", module)
    spec.loader.exec_module(module)
    db = tmp_path / "ga.db"
    summary = module.main(["--quick", "--model", str(tiny_model_dir), "--db", str(db)])
    assert summary["relaxed"] == 8  # 4 start candidates + 4 offspring
    rows = list(connect(db).select("relaxed=1"))
    assert len(rows) == 8 and all("raw_score" in r for r in rows)
    assert sum(1 for r in rows if r.origin == "StartingCandidateUnrelaxed") == 4
    # Both LLM mutations ran (the quick run once ended with infill: {} and regeneration: {}).
    assert summary["infill"].get("proposed", 0) > 0 and summary["regeneration"].get("drawn", 0) > 0
    assert summary["origins"].get("LLMInfillMutation") == summary["infill"]["offspring"] >= 1
