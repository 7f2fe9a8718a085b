"""The distance guard: no two sampled sites closer than ``min_distance`` (minimum image)."""

import numpy as np
import pytest
from ase.db import connect
from ase.geometry import cellpar_to_cell, get_distances

from ase_llmgen.sampling.decode import FilteredMasks
from ase_llmgen.sampling.sampler import Sampler, SampleSettings, token_texts
from ase_llmgen.text.geometry import GRID, SiteGrid, guard
from ase_llmgen.text.grammar import CrystalGrammar


def _grid(lattice: str, sites: list[str], min_distance: float) -> SiteGrid:
    grid = SiteGrid(min_distance)
    grid.feed(lattice + "\n" + "".join(f"Na\n{site}\n" for site in sites))
    return grid


@pytest.mark.parametrize(
    "lattice, min_distance",
    [
        ("4.1 5.3 6.2\n80 95 110", 1.3),  # triclinic
        ("9.3 3.4 8.6\n85 100 25", 1.5),  # strongly skewed: the nearest image is not a neighbouring cell
        ("2.9 2.9 2.9\n90 90 90", 1.85),  # bcc Fe-sized cell with a GA bond length: the sphere wraps
        ("2.6 2.6 2.6\n60 60 60", 1.85),  # fcc primitive cell
    ],
)
def test_free_grid_points_are_exactly_those_far_from_every_site(lattice, min_distance):
    sites = ["0.00 0.00 0.00", "0.37 0.91 0.52", "0.95 0.10 0.03"]
    grid = _grid(lattice, sites[:1], min_distance)
    grid.feed("".join(f"Na\n{site}\n" for site in sites[1:]))
    assert grid.free is not None
    cellpar = [float(v) for v in lattice.split()]
    cell = cellpar_to_cell(cellpar)
    site_frac = np.array([[float(v) for v in s.split()] for s in sites])
    points = np.random.default_rng(0).integers(0, GRID, size=(3000, 3))
    _, dist = get_distances((points / GRID) @ cell, site_frac @ cell, cell=cell, pbc=True)
    far = dist.min(axis=1)
    clear = np.abs(far - min_distance) > 1e-5  # ties are blocked on purpose (next test)
    assert np.array_equal(grid.free[tuple(points.T)][clear], (far >= min_distance)[clear])
    assert grid.n_free == grid.free.sum()


def test_a_site_the_guard_allows_passes_the_validity_check():
    from ase import Atoms

    from ase_llmgen.checks.validity import structurally_valid

    for a in (2.5, 4.0, 5.0, 6.1):  # exact ties (0.02 -> 0.12 at 5.0 A is 0.5 A) included
        grid = _grid(f"{a} {a} {a}\n90 90 90", ["0.02 0.00 0.00"], 0.5)
        for i in range(GRID):
            for j in (0, 7):
                atoms = Atoms("Na2", scaled_positions=[[0.02, 0, 0], [i / GRID, j / GRID, 0]], cell=[a] * 3, pbc=True)
                if grid.free[i, j, 0]:
                    assert structurally_valid(atoms), (a, i, j)


def test_digit_prefixes_are_allowed_only_if_a_free_position_is_in_reach():
    # 5 A cube, 0.33 A: a site blocks z within +-0.06 of its own (0.07 * 5 = 0.35 A is free).
    grid = _grid("5.0 5.0 5.0\n90 90 90", ["0.00 0.00 0.00", "0.00 0.00 0.13"], 0.33)
    grid.feed("Na\n0.00 0.00 0.")  # free z: 0.20-0.93 only
    assert not grid.allows("0", "coords") and not grid.allows("1", "coords")
    assert grid.allows("2", "coords") and grid.allows("9", "coords")
    grid.feed("9")
    assert grid.allows("3", "coords") and not grid.allows("4", "coords")

    grid = _grid("5.0 5.0 5.0\n90 90 90", ["0.00 0.00 0.00", "0.00 0.00 0.02"], 0.33)
    grid.feed("Na\n0.00 0.00 0.")  # free z in the first decade: 0.09 only
    assert grid.allows("0", "coords")
    assert grid.allows("09", "coords") and not grid.allows("08", "coords")  # multi-digit tokens, as a whole
    grid.feed("0")
    assert grid.allows("9", "coords") and not grid.allows("8", "coords")
    assert grid.allows("9\n", "coords") and not grid.allows("8\n", "coords")


def test_a_full_cell_admits_only_the_end():
    # fcc sites in a 2 A cube: every point is within 1.05 A of one of them.
    sites = ["0.00 0.00 0.00", "0.50 0.50 0.00", "0.50 0.00 0.50", "0.00 0.50 0.50"]
    assert not _grid("2.0 2.0 2.0\n90 90 90", sites, 1.05).any_free
    assert _grid("2.0 2.0 2.0\n90 90 90", sites[:3], 1.05).any_free

    texts = token_texts(_tokenizer())
    eos = _tokenizer().eos_token_id
    masks = FilteredMasks(CrystalGrammar(max_atoms=8), texts, eos, len(texts), [guard(1.05)])
    state = masks.start()
    for token in _tokenizer()("2.0 2.0 2.0\n90 90 90\n" + "".join(f"Na\n{s}\n" for s in sites))["input_ids"]:
        state = masks.advance(state, token)
    mask, forced = masks.allowed(state)
    assert forced == eos and mask.sum() == 1  # the grammar wants an element; the guard has no room for it
    assert not masks.can_end(state)  # so that end is a dead end, not a finished crystal

    # Better: after the last site that fits, the line may not go on to another element at all.
    newline = texts.index("\n")
    state = masks.start()
    for token in _tokenizer()("2.0 2.0 2.0\n90 90 90\n" + "".join(f"Na\n{s}\n" for s in sites)[:-1])["input_ids"]:
        state = masks.advance(state, token)
    mask, forced = masks.allowed(state)
    assert forced == eos and not mask[newline] and masks.can_end(state)


def test_rows_ending_at_a_dead_end_are_dropped_and_counted(tiny_bundle, monkeypatch):
    from ase_llmgen.sampling import sampler as sampler_module

    class DeadAfterLattice(FilteredMasks):
        """A guard that finds no room for any site (as in a full cell)."""

        def allowed(self, state):
            inner, row = state
            if inner is not None and inner.phase == "element":
                return self.eos_only, self.eos_id
            return super().allowed(state)

    monkeypatch.setattr(sampler_module, "FilteredMasks", DeadAfterLattice)
    settings = SampleSettings(batch_size=8, max_atoms=4, require_valid=False, max_attempts_factor=2, min_distance=0.5)
    atoms, stats = Sampler(tiny_bundle, settings, seed=0).sample(2)
    assert atoms == [] and stats.drawn == stats.unparseable == 8  # one batch spends the budget of 4
    assert stats.errors == {"cut off at the length limit, or a dead end of the grammar": 8}


def _tokenizer():
    from ase_llmgen.models.tokenizer import build_tokenizer

    return build_tokenizer()


def _min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=True) + np.eye(len(atoms)) * 1e9
    return float(d.min())


def test_guarded_samples_keep_their_sites_apart(any_tiny_bundle):
    # The tiny random model writes huge cells: a large threshold makes collisions common enough to see.
    threshold = 40.0

    def draw(min_distance):
        settings = SampleSettings(
            batch_size=32, max_atoms=6, min_atoms=6, temperature=1.0, require_valid=False, min_distance=min_distance
        )
        atoms, _ = Sampler(any_tiny_bundle, settings, seed=0).sample(32)
        guarded = []
        for a in atoms:  # cells too thin for the guard's grid leave it off; count only the others
            lines = a.info["text"].split("\n")
            if _grid("\n".join(lines[:2]), [], threshold).free is not None:
                guarded.append(a)
        return guarded

    free = draw(0.0)
    assert any(_min_distance(a) < threshold for a in free)  # without the guard the model collides
    guarded = draw(threshold)
    assert len(guarded) >= 10
    assert all(_min_distance(a) >= threshold for a in guarded)
    assert all(a.info["min_distance"] == threshold for a in guarded)


@pytest.mark.parametrize("value", ["0.5", "0"])
def test_generate_cli_records_min_distance(tmp_path, tiny_model_dir, value):
    from ase_llmgen.cli import main

    out = tmp_path / "gen.db"
    args = ["generate", "-n", "2", "-o", str(out), "--model", str(tiny_model_dir), "--max-atoms", "4"]
    assert main(args + ["--batch-size", "16", "--min-distance", value, "-q"]) == 0
    rows = list(connect(out).select())
    assert len(rows) == 2 and all(r.min_distance == float(value) for r in rows)


def test_a_negative_min_distance_is_refused():
    with pytest.raises(ValueError, match="min_distance"):
        SampleSettings(min_distance=-0.5)


def test_guarded_and_unguarded_runs_resume_separately(tmp_path, tiny_bundle):
    from ase_llmgen.sampling.run import generate_to_file

    out = tmp_path / "runs.db"
    kwargs = dict(model=tiny_bundle, elements=("Na", "Cl"), max_atoms=4, batch_size=16, progress=False)
    assert generate_to_file(out, 2, min_distance=0.0, **kwargs)["written"] == 2
    again = generate_to_file(out, 2, **kwargs)  # the default: no guard
    assert again["already_there"] == 2 and again["written"] == 0
    guarded = generate_to_file(out, 2, min_distance=0.5, **kwargs)  # another request
    assert guarded["already_there"] == 0 and guarded["written"] == 2
    rows = list(connect(out).select())
    # Unguarded requests keep the key they had before the guard existed, so older databases still resume.
    assert sum("min_distance" not in r.request for r in rows) == 2
    assert {r.min_distance for r in rows} == {0.0, 0.5}
