"""Long sampling jobs: generate into a database (resumable, data-parallel) and
mutate a database with a registered GA operator.

Resuming: every row carries a ``request`` key (model, conditions, sampling
settings, seed) and the batch it came from; a rerun counts the rows of its
request and continues with the next batch, so it tops up to ``n`` without
repeating a seed.  Under ``torchrun`` / ``accelerate launch`` each rank draws
its own seed stream into its own shard, and rank 0 merges the shards.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ase_llmgen.checks.database import (
    checked_row,
    claim_batch,
    is_crystal,
    open_db,
    select_rows,
    transaction,
    write_below,
)
from ase_llmgen.checks.files import write_crystal_file
from ase_llmgen.checks.symmetry import DEFAULT_SYMPREC
from ase_llmgen.models.bundle import LMBundle
from ase_llmgen.sampling.settings import SampleSettings
from ase_llmgen.text.prompts import Conditions


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier() -> None:
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def request_key(**settings) -> str:
    """A string naming one generation request (stored in every row it produced)."""
    return json.dumps(settings, sort_keys=True, default=str)


@dataclass
class _Done:
    """What a database already holds of one request."""

    per_path: dict = field(default_factory=dict)  # rows by file
    next_batch: int = 0  # the first batch number no row has used
    duplicates: int = 0  # rows repeating a (rank, batch, sample) another row has

    @property
    def rows(self) -> int:
        """Distinct rows: duplicates (from before concurrent runs were safe) count once."""
        return sum(self.per_path.values()) - self.duplicates


def _done(paths: list[Path], request: str, rank: int | None) -> _Done:
    """Rows already written for ``request`` (by ``rank``, if given), the next unused batch number and duplicates."""
    done = _Done()
    seen: set = set()
    for path in paths:
        if not path.exists():
            continue
        for row in open_db(path).select(request=request):
            if rank is not None and row.get("rank", 0) != rank:
                continue
            done.per_path[path] = done.per_path.get(path, 0) + 1
            done.next_batch = max(done.next_batch, row.get("batch", -1) + 1)
            if "sample" in row:  # rows written before samples were numbered cannot be told apart
                key = (row.get("rank", rank or 0), row.batch, row.sample)
                done.duplicates += key in seen
                seen.add(key)
    return done


def generate_to_file(
    output: str | Path,
    n: int,
    model: str | LMBundle | None = None,
    conditions: Conditions | None = None,
    settings: SampleSettings | None = None,
    seed: int = 0,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
    require: tuple[str, ...] = (),
    **overrides,
) -> dict:
    """Generate ``n`` crystals into ``output``: an ASE db (resumable) or any file ASE writes.

    Each crystal is checked and written as soon as its sample is finished, so an interruption
    (Ctrl-C, even SIGKILL) loses at most the crystal in hand; a rerun with the same settings
    tops the database up to ``n``.  Runs of one request at once share the work: each batch is
    claimed in the database before it is drawn (different seeds), and a row is written only
    while the database holds fewer than ``n`` rows of the request, so together they write
    ``n`` distinct crystals.  Duplicate rows found (same batch and sample) are counted once and
    reported (``duplicates``).

    ``model``: a model folder, a loaded bundle or a built-in name; ``None`` picks "wyckoff"
    (:func:`~ase_llmgen.models.bundle.model_for`; "default" for a band-gap request), with the
    model's own sampling defaults (the wyckoff model's cell temperature) for settings left unset.
    With a formula condition and ``enforce_formula`` (the default), the grammar admits only
    that composition; switch it off to measure how well the model follows the prompt alone.
    ``require_valid`` redraws structurally invalid samples (CDVAE: sites closer than 0.5 A or
    volume under 0.1 A^3); compositionally invalid ones (SMACT) are kept either way, marked
    ``comp_valid=False`` and ``valid=False``.
    How to sample is ``settings`` (:class:`~ase_llmgen.sampling.settings.SampleSettings`), or keyword
    overrides of its fields (``temperature=1.0``, ...).
    ``min_distance`` (A), when above 0, keeps sampled sites apart during decoding (the distance guard).
    ``min_atoms`` makes the grammar go on to at least that many sites (e.g. for larger cells).
    ``require``: boolean check keys a sample must have True, else it is redrawn (e.g. ``("plausible",)``;
    :mod:`ase_llmgen.checks.require`).

    Returns a summary: ``written`` (this run), ``already_there``, ``complete``, the draws
    (``drawn``, ``accepted``, ``unparseable``, ``invalid`` = structurally invalid draws redrawn,
    ``rejected`` = draws that failed ``require``) and the check results of the rows this run wrote:
    ``rows_valid``, ``rows_struct_invalid``, ``rows_comp_invalid``.
    """
    from ase_llmgen.checks.require import requirement
    from ase_llmgen.models.bundle import load_model, model_for
    from ase_llmgen.sampling.sources import LLMStructureSource

    settings = SampleSettings.of(settings, **overrides)
    s = settings
    accept = requirement(require, symprec)  # before loading a model: an unknown key fails fast
    output = Path(output)
    is_db = output.suffix == ".db"
    if not is_db:  # before loading a model and sampling, not after
        _check_writable_format(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    conditions = conditions or Conditions()
    if model is None:
        model = model_for(conditions.as_dict())
    rank, world = _rank_world()
    if world > 1 and not is_db:
        raise ValueError("data-parallel generation writes an ASE database: give -o something.db")
    target = output.with_name(f"{output.stem}.rank{rank}{output.suffix}") if world > 1 else output
    db = open_db(target, write=True) if is_db else None  # a file that is no database is named before sampling
    # A loaded bundle lets a caller run many requests without reloading the model.
    bundle = model if isinstance(model, LMBundle) else load_model(model)
    # The model's own sampling defaults are part of the request, as if asked for (a rerun that names them resumes).
    settings = s = settings.for_model(bundle.meta, where=bundle.name)
    request = request_key(
        model=bundle.name if isinstance(model, LMBundle) else str(model),
        conditions=conditions.as_dict(),
        T=s.temperature,
        top_p=s.top_p,
        seed=seed,
        constrained=s.constrained,
        max_atoms=s.max_atoms,
        elements=sorted(s.elements) if s.elements else None,
        require_valid=s.require_valid,
        **({"enforce_formula": s.enforce_formula} if conditions.formula and s.constrained else {}),
        # Databases written before the guard existed were made without it: they resume with min_distance=0.
        **({"min_distance": s.min_distance} if s.constrained and s.min_distance > 0 else {}),
        **({"min_atoms": s.min_atoms} if s.min_atoms > 1 else {}),
        # Equal to the temperature it is the same request as none: a database a model (of the same release) wrote at
        # one temperature resumes with --cell-temperature equal to --temperature.
        **({"cell_temperature": s.cell_temperature_apart} if s.cell_temperature_apart is not None else {}),
        **({"formula_first": True} if s.formula_first and not conditions.formula else {}),  # only where it acts
        **({"require": sorted(require)} if accept is not None else {}),
        # A built-in model replaced under the same name carries a "release" (ase_llmgen.json): a rerun never tops up
        # a database an earlier model wrote with the newer model's samples.
        **({"release": bundle.meta["release"]} if bundle.meta.get("release") else {}),
    )
    # Each rank owns the rows rank, rank + world, ... of the n wanted, and its own seed stream.
    paths = list(dict.fromkeys([output, target]))
    done = _done(paths, request, rank if world > 1 else None) if is_db else _Done()
    have = done.rows
    want = len(range(rank, n, world)) - have
    # The most rows of this request the target may hold (the same number for every run of it at once).
    limit = done.per_path.get(target, 0) + want
    source = LLMStructureSource(
        bundle,
        **conditions.as_dict(),
        settings=settings,
        seed=seed * 1009 + rank if world > 1 else seed,
        first_batch=done.next_batch,
    )
    if db is not None:
        source.sampler.batch_claim = functools.partial(claim_batch, db, request)
    tally = {"written": 0, "rows_valid": 0, "rows_struct_invalid": 0, "rows_comp_invalid": 0}
    full = False  # another run of the request filled the database first
    if want > 0:
        with tqdm(total=want, disable=not progress or rank != 0, desc="generate") as bar:
            budget = source.stats.drawn + want * source.sampler.settings.max_attempts_factor
            stream = source.sampler.iter_structures(
                source.conditions, source.stats, accept, max_draws=budget, wanted=want
            )
            extra = {"request": request, "task": "generate"} if is_db else {"task": "generate"}

            def rows():
                for atoms in stream:
                    clean, pairs, data = checked_row(atoms, symprec, extra)
                    yield clean, pairs, data
                    tally["written"] += 1
                    tally["rows_valid"] += bool(pairs.get("valid"))
                    tally["rows_struct_invalid"] += not pairs.get("struct_valid", True)
                    tally["rows_comp_invalid"] += not pairs.get("comp_valid", True)
                    bar.update(1)
                    bar.set_postfix(drawn=source.stats.drawn)
                    if tally["written"] >= want:
                        return

            try:
                if db is not None:
                    for clean, pairs, data in rows():
                        if write_below(db, clean, pairs, data, limit, request=request) is None:
                            full = True
                            break
                else:
                    write_crystal_file(output, ((clean, pairs) for clean, pairs, _ in rows()))
            finally:
                stream.close()  # stops decoding the rest of the batch
    if world > 1 and is_db:
        _barrier()
        if rank == 0:
            _merge_shards(output, world)
        _barrier()
    stats = source.stats.as_dict()
    return {
        "output": str(output),
        "written": tally["written"],
        "already_there": have,
        "requested": n,
        # False when the redraw budget ran out first (e.g. cells larger than the model writes)
        "complete": full or tally["written"] >= want,
        "duplicates": done.duplicates,
        "rank": rank,
        "world": world,
        **stats,
        **{k: v for k, v in tally.items() if k != "written"},
    }


def _check_writable_format(output: Path) -> None:
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    try:
        known = ioformats.get(filetype(output, read=False))
    except UnknownFileTypeError:
        known = None
    if known is None or not known.can_write:
        raise ValueError(
            f"cannot write {output}: ASE writes no format called {output.suffix or output.name!r} "
            "(use .db, .cif, .extxyz, ...)"
        )


def _merge_shards(output: Path, world: int) -> None:
    """Append each rank's shard to ``output`` (in rank order, in one transaction) and remove the shards.

    Rows already merged (a kill between the commit and the removal) are not merged twice.
    """
    target = open_db(output, write=True)
    merged = {
        (row.request, row.rank, row.batch, row.sample)
        for row in target.select("rank,sample")
        if "request" in row and "batch" in row
    }
    with transaction(target):
        for r in range(world):
            shard = output.with_name(f"{output.stem}.rank{r}{output.suffix}")
            if not shard.exists():
                continue
            for row in open_db(shard).select():
                if (row.get("request"), r, row.get("batch"), row.get("sample")) in merged:
                    continue
                target.write(row.toatoms(), key_value_pairs=dict(row.key_value_pairs, rank=r), data=row.data)
    for r in range(world):
        output.with_name(f"{output.stem}.rank{r}{output.suffix}").unlink(missing_ok=True)


def mutate_database(
    database: str | Path,
    output: str | Path,
    operator: str = "llm_infill",
    model: str = "default",
    settings: SampleSettings | None = None,
    seed: int = 0,
    selection: str | None = None,
    per_parent: int = 1,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
    **overrides,
) -> dict:
    """Apply a registered mutation operator to each selected row of ``database``.

    Children go to ``output`` with the parent's id (``parent_id``), the operator
    and its description; parents already mutated in ``output`` are skipped, so
    a rerun resumes.  ``settings`` (or keyword overrides of its fields) go to the operator's factory.
    """
    from ase_llmgen.plugins import mutators

    known = mutators()
    if operator not in known:
        raise KeyError(f"unknown operator {operator!r}; registered: {', '.join(known)}")
    database, output = Path(database), Path(output)
    source = open_db(database)  # a bad file is named before a model is loaded
    target = open_db(output, write=True)
    settings = SampleSettings.of(settings, **overrides)
    op = known[operator].factory(model=model, settings=settings, seed=seed)
    done: dict[int, int] = {}
    for row in target.select(operator=operator):
        done[row.parent_id] = done.get(row.parent_id, 0) + 1
    # Rows that are not crystals (ase_ga's empty first row, molecules) are no parents.
    rows = select_rows(source, selection, database)
    parents = [(row, atoms) for row in rows if is_crystal(atoms := row.toatoms())]
    made, failed, reasons = 0, 0, {}
    for row, atoms in tqdm(parents, disable=not progress, desc=f"mutate ({operator})"):
        for _ in range(per_parent - done.get(row.id, 0)):
            parent = atoms.copy()  # an operator may change its parent
            parent.info = {"confid": row.id, "key_value_pairs": {}, "data": {}}
            child, description = op.get_new_individual([parent])
            if child is None:
                failed += 1
                reasons[description] = reasons.get(description, 0) + 1
                continue
            child.info.update({"operator": operator, "task": "mutate"})
            clean, pairs, data = checked_row(child, symprec, {"parent_id": row.id, "description": description})
            target.write(clean, key_value_pairs=pairs, data=data)
            made += 1
    return {"output": str(output), "parents": len(parents), "children": made, "failed": failed, "reasons": reasons}
