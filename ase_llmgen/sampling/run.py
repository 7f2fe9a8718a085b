"""Long sampling jobs: generate into a database (resumable, data-parallel) and
mutate a database with a registered GA operator.

Resuming: every row carries a ``request`` key (model, conditions, sampling
settings, seed) and the batch it came from; a rerun counts the rows of its
request and continues with the next batch, so it tops up to ``n`` without
repeating a seed.  Under ``torchrun`` / ``accelerate launch`` each rank draws
its own seed stream into its own shard, and rank 0 merges the shards.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

from ase.db import connect
from tqdm.auto import tqdm

from ase_llmgen.checks.database import condition_pairs, is_crystal, select_rows, write_structures
from ase_llmgen.checks.symmetry import DEFAULT_SYMPREC
from ase_llmgen.models.bundle import LMBundle
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


def _done(paths: list[Path], request: str, rank: int | None) -> tuple[int, int]:
    """Rows already written for ``request`` (by ``rank``, if given) and the next unused batch number."""
    rows = [
        row
        for path in paths
        if path.exists()
        for row in connect(path).select(request=request)
        if rank is None or row.get("rank", 0) == rank
    ]
    return len(rows), max((r.get("batch", -1) for r in rows), default=-1) + 1


def generate_to_file(
    output: str | Path,
    n: int,
    model: str | LMBundle = "default",
    conditions: Conditions | None = None,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    max_atoms: int = 20,
    elements: tuple[str, ...] | None = None,
    batch_size: int = 64,
    constrained: bool = True,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
    require_valid: bool = True,
    enforce_formula: bool = True,
    min_distance: float = 0.0,
    min_atoms: int = 1,
    require: tuple[str, ...] = (),
) -> dict:
    """Generate ``n`` crystals into ``output``: an ASE db (resumable) or any file ASE writes.

    With a formula condition and ``enforce_formula`` (the default), the grammar admits only
    that composition; switch it off to measure how well the model follows the prompt alone.
    ``min_distance`` (A), when above 0, keeps sampled sites apart during decoding (the distance guard).
    ``min_atoms`` makes the grammar go on to at least that many sites (e.g. for larger cells).
    ``require``: boolean check keys a sample must have True, else it is redrawn (e.g. ``("plausible",)``;
    :mod:`ase_llmgen.checks.require`).
    """
    from ase.io import write

    from ase_llmgen.checks.require import requirement
    from ase_llmgen.models.bundle import load_model
    from ase_llmgen.sampling.sources import LLMStructureSource

    accept = requirement(require, symprec)  # before loading a model: an unknown key fails fast
    output = Path(output)
    is_db = output.suffix == ".db"
    if not is_db:  # before loading a model and sampling, not after
        _check_writable_format(output)
    output.parent.mkdir(parents=True, exist_ok=True)  # ASE's lock file needs the folder
    conditions = conditions or Conditions()
    rank, world = _rank_world()
    # A loaded bundle lets a caller run many requests without reloading the model.
    bundle = model if isinstance(model, LMBundle) else load_model(model)
    request = request_key(
        model=bundle.name if isinstance(model, LMBundle) else str(model),
        conditions=conditions.as_dict(),
        T=temperature,
        top_p=top_p,
        seed=seed,
        constrained=constrained,
        max_atoms=max_atoms,
        elements=sorted(elements) if elements else None,
        require_valid=require_valid,
        **({"enforce_formula": enforce_formula} if conditions.formula and constrained else {}),
        # Databases written before the guard existed were made without it: they resume with min_distance=0.
        **({"min_distance": min_distance} if constrained and min_distance > 0 else {}),
        **({"min_atoms": min_atoms} if min_atoms > 1 else {}),
        **({"require": sorted(require)} if accept is not None else {}),
    )
    if world > 1 and not is_db:
        raise ValueError("data-parallel generation writes an ASE database: give -o something.db")
    target = output.with_name(f"{output.stem}.rank{rank}{output.suffix}") if world > 1 else output
    # Each rank owns the rows rank, rank + world, ... of the n wanted, and its own seed stream.
    paths = list(dict.fromkeys([output, target]))
    have, first_batch = _done(paths, request, rank if world > 1 else None) if is_db else (0, 0)
    want = len(range(rank, n, world)) - have
    source = LLMStructureSource(
        bundle,
        **conditions.as_dict(),
        temperature=temperature,
        top_p=top_p,
        seed=seed * 1009 + rank if world > 1 else seed,
        max_atoms=max_atoms,
        elements=elements,
        batch_size=batch_size,
        constrained=constrained,
        first_batch=first_batch,
        require_valid=require_valid,
        enforce_formula=enforce_formula,
        min_distance=min_distance,
        min_atoms=min_atoms,
    )
    written: list = []
    if want > 0:
        with tqdm(total=want, disable=not progress or rank != 0, desc="generate") as bar:

            def counted(iterable):
                for atoms in iterable:
                    bar.update(1)
                    bar.set_postfix(drawn=source.stats.drawn)
                    yield atoms

            budget = source.stats.drawn + want * source.sampler.settings.max_attempts_factor
            stream = source.sampler.iter_structures(source.conditions, source.stats, accept, max_draws=budget)
            structures = counted(islice(stream, want))
            if is_db:
                written = write_structures(target, structures, symprec, extra={"request": request, "task": "generate"})
            else:
                images = list(structures)
                write(output, [_for_file(a) for a in images])
                written = images
    if world > 1 and is_db:
        _barrier()
        if rank == 0:
            _merge_shards(output, world)
        _barrier()
    stats = source.stats.as_dict()
    return {
        "output": str(output),
        "written": len(written),
        "already_there": have,
        "requested": n,
        # False when the redraw budget ran out first (e.g. cells larger than the model writes)
        "complete": len(written) >= want,
        "rank": rank,
        "world": world,
        **stats,
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


def _for_file(atoms):
    """A copy whose ``info`` any ASE format can hold: flat scalars, no multi-line text.

    The sample's text spans lines (it would break an extxyz comment line) and the
    conditions are a dict: they become the ``req_*`` keys a database row gets.
    """
    out = atoms.copy()
    info = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, bool)) and k != "text"}
    info.update(condition_pairs(dict(atoms.info.get("conditions") or {})))
    out.info = info
    return out


def _merge_shards(output: Path, world: int) -> None:
    """Append each rank's shard to ``output`` (in rank order) and remove the shards."""
    target = connect(output)
    with target:
        for r in range(world):
            shard = output.with_name(f"{output.stem}.rank{r}{output.suffix}")
            if not shard.exists():
                continue
            for row in connect(shard).select():
                target.write(row.toatoms(), key_value_pairs=dict(row.key_value_pairs, rank=r), data=row.data)
    for r in range(world):
        output.with_name(f"{output.stem}.rank{r}{output.suffix}").unlink(missing_ok=True)


def mutate_database(
    database: str | Path,
    output: str | Path,
    operator: str = "llm_infill",
    model: str = "default",
    temperature: float = 0.7,
    seed: int = 0,
    selection: str | None = None,
    per_parent: int = 1,
    symprec: float = DEFAULT_SYMPREC,
    progress: bool = True,
) -> dict:
    """Apply a registered mutation operator to each selected row of ``database``.

    Children go to ``output`` with the parent's id (``parent_id``), the operator
    and its description; parents already mutated in ``output`` are skipped, so
    a rerun resumes.
    """
    from ase_llmgen.plugins import mutators

    known = mutators()
    if operator not in known:
        raise KeyError(f"unknown operator {operator!r}; registered: {', '.join(known)}")
    op = known[operator].factory(model=model, temperature=temperature, seed=seed)
    database, output = Path(database), Path(output)
    if not database.exists():
        raise FileNotFoundError(f"{database}: no such database")
    done: dict[int, int] = {}
    if output.exists():
        for row in connect(output).select(operator=operator):
            done[row.parent_id] = done.get(row.parent_id, 0) + 1
    # Rows that are not crystals (ase_ga's empty first row, molecules) are no parents.
    rows = select_rows(connect(database), selection, database)
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
            write_structures(output, [child], symprec, extra={"parent_id": row.id, "description": description})
            made += 1
    return {"output": str(output), "parents": len(parents), "children": made, "failed": failed, "reasons": reasons}
