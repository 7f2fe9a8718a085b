"""`ase-llmgen evaluate`: metrics against the shipped MP-20 data (or a user's), stability, S.U.N., reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation the command line asked for; prints the Markdown report."""
    from ase_llmgen.metrics.evaluate import evaluate, plots, report_markdown, write_json

    samples = Path(args.samples)
    if not samples.exists():
        raise FileNotFoundError(f"{samples}: no such file or folder")
    reference, train = _reference_arg(args.reference), _reference_arg(args.train)
    if args.relax:
        if samples.suffix != ".db":
            raise ValueError("--relax writes results back into the samples: give an ASE database")
        from ase_llmgen.relax.runner import relax_database

        # Relax first (a seeded random subset of the valid rows, in place, resumable: the same
        # runner as `ase-llmgen relax`); evaluate() then reports the stored results with the rest.
        relax_database(samples, max_relax=args.relax, seed=args.seed)
    results = evaluate(
        samples,
        reference=reference,
        train=train,
        n_jobs=args.jobs,
        max_reference=args.max_reference,
        label=args.label,
        write_back=not args.read_only,
    )
    if args.model and reference is not None:
        from ase_llmgen.data.readers import read_records
        from ase_llmgen.metrics.evaluate import SHIPPED
        from ase_llmgen.metrics.likelihood import ipt
        from ase_llmgen.metrics.reference import TEST_CSV
        from ase_llmgen.models.bundle import load_model

        records, _ = read_records(TEST_CSV if reference == SHIPPED else reference, on_error="skip")
        results["likelihood"] = ipt(load_model(args.model), [r.atoms for r in records[: args.ipt_structures]])
    report = report_markdown(results)  # named by results["label"]
    if args.json:
        write_json(results, args.json)
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.plots:
        plots(results, args.plots)
    print(report)
    if "likelihood" in results:
        print(json.dumps(results["likelihood"]))
    return 0


def _reference_arg(value: str | None) -> str | None:
    """``--reference``/``--train``: a file, ``mp20`` (shipped, the default) or ``none``."""
    if value is None or value.lower() == "none":
        return None
    return value
