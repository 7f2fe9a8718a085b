"""`ase-llmgen search` and ga.search.run_search: ase_ga searches with EMT standing in for CHGNet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from ase.calculators.emt import EMT
from ase.db import connect

from ase_llmgen.ga.search import SearchSettings, charge_balanced_compositions, operator_for, run_search
from ase_llmgen.hookspecs import hookimpl
from ase_llmgen.registry import CalculatorSpec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(population=4, generations=2, steps=15, fmax=0.2, batch_size=8, max_draws=16, score="energy")


class EMTPlugin:
    """A third-party plugin registering ASE's EMT (cheap; Al, Ni, Cu, Pd, Ag, Pt, Au) as a calculator."""

    @hookimpl
    def register_calculators(self):
        return [CalculatorSpec("emt_test", lambda **kw: EMT(), "ASE EMT, for tests")]


@pytest.fixture
def emt_registered():
    from ase_llmgen.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(EMTPlugin(), name="emt-test-plugin")
    yield "emt_test"
    pm.unregister(name="emt-test-plugin")


def _check_complete(db_path: Path, population: int, offspring: int) -> list:
    """Every candidate relaxed exactly once, nothing left unrelaxed, the counts the settings ask for."""
    rows = list(connect(db_path).select("gaid"))
    relaxed = Counter(r.gaid for r in rows if r.relaxed == 1)
    unrelaxed = {r.gaid for r in rows if r.relaxed == 0}
    assert set(relaxed) == unrelaxed and set(relaxed.values()) == {1}
    starts = [r for r in rows if r.relaxed == 1 and r.origin == "StartingCandidateUnrelaxed"]
    assert len(starts) == population and len(relaxed) == population + offspring
    return [r for r in rows if r.relaxed == 1]


def test_fixed_composition_mixed_search(tmp_path, tiny_model_dir, emt_registered):
    db = tmp_path / "ga.db"
    summary = run_search(
        db, SearchSettings(composition="Cu2Au2", calculator=emt_registered, model=str(tiny_model_dir), **TINY)
    )
    rows = _check_complete(db, 4, 8)
    assert summary["relaxed"] == 12 and summary["relaxed_now"] == 12
    assert all(sorted(r.numbers) == [29, 29, 79, 79] for r in rows)  # the composition never changes
    assert all(r.raw_score == pytest.approx(-r.energy_per_atom) for r in rows if r.extinct == 0)
    # The start population came from the model or, where the tiny model gave nothing, the random generator.
    assert {r.source for r in rows if r.origin == "StartingCandidateUnrelaxed"} <= {"llm", "fallback"}
    offspring = [r for r in rows if r.origin != "StartingCandidateUnrelaxed"]
    assert {r.operator for r in offspring} <= {"pairing", "strain", "permutation", "rattle", "regeneration"}
    # ase db reads it: the best candidate by score is the summary's
    best = next(connect(db).select("relaxed=1,extinct=0", sort="-raw_score"))
    assert best.raw_score == max(r.raw_score for r in rows) and best.gaid == summary["best"][0]["gaid"]


def test_system_search_llm_infill_changes_composition(tmp_path, tiny_model_dir, emt_registered):
    db = tmp_path / "sys.db"
    settings = SearchSettings(
        system="Cu-Au-Ag",
        max_atoms=4,
        calculator=emt_registered,
        model=str(tiny_model_dir),
        weights={"infill": 1, "strain": 1},
        **TINY,
    )
    summary = run_search(db, settings, progress=False)
    rows = _check_complete(db, 4, 8)
    assert all(set(r.symbols) <= {"Cu", "Au", "Ag"} for r in rows)
    starts = [r for r in rows if r.origin == "StartingCandidateUnrelaxed"]
    assert all(set(r.symbols) == {"Cu", "Au", "Ag"} and r.natoms <= 4 for r in starts)  # every element
    infill = [r for r in rows if r.get("operator") == "infill"]
    assert infill and all("->" in r.substitution and r.task == "infill" for r in infill)
    assert summary["operator_counts"]["infill"]["offspring"] == len(infill)


def test_classical_search_resumes_after_sigkill(tmp_path, emt_registered):
    """A real SIGKILL in the middle of a relaxation; the rerun finishes the same search as an uninterrupted one."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from ase.calculators.emt import EMT
        from ase.db import connect
        from ase_llmgen.cli import main
        from ase_llmgen.hookspecs import hookimpl
        from ase_llmgen.plugins import get_plugin_manager
        from ase_llmgen.registry import CalculatorSpec

        db = sys.argv[sys.argv.index("-o") + 1]
        kill_at = int(os.environ.get("KILL_AT", "0"))

        class KillingEMT(EMT):
            # SIGKILL inside relaxation number kill_at (counting the relaxations already in the database)
            def calculate(self, *args, **kwargs):
                if kill_at and connect(db).count(relaxed=1) == kill_at - 1:
                    os.kill(os.getpid(), signal.SIGKILL)
                super().calculate(*args, **kwargs)

        class Plugin:
            @hookimpl
            def register_calculators(self):
                return [CalculatorSpec("emt_test", lambda **kw: KillingEMT(), "")]

        get_plugin_manager().register(Plugin(), name="p")
        sys.exit(main(sys.argv[1:]))
        """
    )
    # Killed inside the 7th relaxation: the start population is relaxed, the third offspring written, not relaxed.
    path = tmp_path / "run.py"
    path.write_text(script)
    args = ["search", "-o", None, "--composition", "Cu2Au2", "--operators", "classical", "--calculator", "emt_test"]
    args += ["--population", "4", "--generations", "2", "--steps", "15", "--fmax", "0.2", "--score", "energy", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(db: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
        argv = [str(a) if a is not None else str(db) for a in args]
        return subprocess.run(
            [sys.executable, str(path), *argv], env={**env, "KILL_AT": str(kill_at)}, capture_output=True, text=True
        )

    killed = tmp_path / "killed.db"
    first = run(killed, kill_at=7)
    assert first.returncode == -9, first.stderr
    before = list(connect(killed).select("gaid"))
    assert sum(r.relaxed == 1 for r in before) == 6 and sum(r.relaxed == 0 for r in before) == 7
    second = run(killed)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["relaxed_now"] == 6
    rows = _check_complete(killed, 4, 8)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("killed.db") and p.name != "killed.db"]

    whole = tmp_path / "whole.db"
    assert run(whole).returncode == 0
    reference = _check_complete(whole, 4, 8)
    # The same candidates as the uninterrupted run: randomness is seeded per offspring, not per process.
    assert [(r.gaid, r.origin, round(r.raw_score, 8)) for r in rows] == [
        (r.gaid, r.origin, round(r.raw_score, 8)) for r in reference
    ]


def test_cli_search_and_refusals(tmp_path, emt_registered, capsys):
    from ase_llmgen.cli import main

    db = tmp_path / "cli.db"
    base = ["search", "-o", str(db), "--composition", "Cu3Au", "--operators", "classical", "--calculator"]
    base += [emt_registered, "--population", "3", "--steps", "10", "--score", "energy", "-q"]
    assert main([*base, "--generations", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["relaxed"] == 6 and summary["best"][0]["formula"] == "AuCu3"
    # Extending a search: more generations continue the same database.
    assert main([*base, "--generations", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["relaxed_now"] == 3
    # Another search into the same file is refused, naming the file and the setting; the file is untouched.
    n_rows = connect(db).count()
    assert main([*base, "--seed", "5"]) == 1
    err = capsys.readouterr().err
    assert str(db) in err and "seed" in err
    assert connect(db).count() == n_rows
    assert main([*base, "--cell-temperature", "0.5"]) == 1  # the cell temperature is part of a search's identity
    assert "cell_temperature" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cell_temperature must be >= 0"):
        SearchSettings(composition="Cu3Au", cell_temperature=-1.0)
    assert main(["search", "-o", str(tmp_path / "x.db"), "--composition", "Cu3Au", "--calculator", "nope"]) == 1
    assert "unknown calculator 'nope'" in capsys.readouterr().err
    assert main(["search", "-o", str(tmp_path / "y.db")]) == 1
    assert "composition" in capsys.readouterr().err


def test_operator_schedule_and_compositions():
    weights = {"pairing": 2, "strain": 1, "regeneration": 1}
    first_round = [operator_for(step, weights, seed=0) for step in range(4)]
    assert Counter(first_round) == Counter(weights)  # every operator gets its share in each round
    assert [operator_for(step, weights, seed=0) for step in range(4)] == first_round  # a pure function
    comps = charge_balanced_compositions(("Li", "O"), 4)
    assert {"Li": 2, "O": 1} in comps and {"Li": 1, "O": 1} not in comps
    with pytest.raises(ValueError, match="max_atoms"):
        SearchSettings(system="Li-Fe-O-P", max_atoms=3)
    with pytest.raises(ValueError, match="operators"):
        SearchSettings(composition="NaCl", operators="magic")


def test_guided_generator_yields_the_best_of_each_group(tiny_model_dir, emt_registered):
    """The registered `llm_guided` generator picks, from each k plain samples, the one the potential scores lowest."""
    from ase_llmgen.metrics.stability import ReferenceHull
    from ase_llmgen.plugins import generators
    from ase_llmgen.sampling.sources import LLMStructureSource

    metals = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
    sampling = dict(model=str(tiny_model_dir), elements=metals, max_atoms=4, batch_size=8, seed=3, temperature=1.0)
    guided = generators()["llm_guided"].factory(k=4, calculator=emt_registered, score="energy", **sampling)
    picked = guided.take(3)
    # The same seed and settings without guidance draw the same stream: the candidates, in groups of 4.
    plain = LLMStructureSource(**sampling).take(12)
    assert len(picked) == 3 and guided.scored == 12 and guided.stats.drawn >= 12
    for g, atoms in enumerate(picked):
        energies = []
        for candidate in plain[4 * g : 4 * g + 4]:
            candidate.calc = EMT()
            energies.append(candidate.get_potential_energy() / len(candidate))
        assert atoms.info["guided_energy_per_atom"] == pytest.approx(min(energies))
        assert atoms.info["guided_rank"] == 0 and atoms.info["guided_k"] == 4 and atoms.info["guided_group"] == g
        assert atoms.info["text"] in {c.info["text"] for c in plain[4 * g : 4 * g + 4]}
    # score="e_hull": formation energy above a hull (here every element at 0 eV/atom and no compounds).
    hull = ReferenceHull.from_formation_energies([], mu={m: 0.0 for m in metals})
    by_hull = generators()["llm_guided"].factory(k=4, calculator=emt_registered, score="e_hull", hull=hull, **sampling)
    first = by_hull.take(1)[0]
    assert first.info["guided_score"] == pytest.approx(first.info["guided_energy_per_atom"], abs=1e-9)
    assert first.info["text"] == picked[0].info["text"]
    with pytest.raises(ValueError, match="keep"):
        generators()["llm_guided"].factory(k=2, keep=3, calculator=emt_registered, **sampling)


def test_e_hull_score_writes_the_keys_relax_writes(tmp_path, emt_registered):
    """With score='e_hull' a search stores e_form and e_above_hull, as `relax` does, so one `ase db` query fits both."""
    db = tmp_path / "ga.db"
    settings = dict(TINY, population=3, generations=1, score="e_hull")
    run_search(db, SearchSettings(composition="Cu2Au2", calculator=emt_registered, operators="classical", **settings))
    rows = [r for r in connect(db).select("relaxed=1") if r.get("relax_error") is None]
    assert rows and all(r.raw_score == pytest.approx(-r.e_above_hull) and "e_form" in r for r in rows)
    assert not any("e_hull" in r for r in rows)
    assert connect(db).count("e_above_hull>-100") == len(rows)
