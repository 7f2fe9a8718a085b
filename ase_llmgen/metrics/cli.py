"""`ase-llmgen evaluate`: metrics, optional CHGNet stability, optional perplexity/IPT, reports."""

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
    if args.relax:
        if samples.suffix != ".db":
            raise ValueError("--relax writes results back into the samples: give an ASE database")
        from ase_llmgen.metrics.stability import default_reference_hull, stability

        # Relax first: evaluate() then reports the stored stability results with the rest.
        stability(samples, default_reference_hull(), max_samples=args.relax)
    results = evaluate(
        samples, reference=args.reference, train=args.train, n_jobs=args.jobs, max_reference=args.max_reference
    )
    if args.model and args.reference:
        from ase_llmgen.data.readers import read_records
        from ase_llmgen.metrics.likelihood import ipt
        from ase_llmgen.models.bundle import load_model

        records, _ = read_records(args.reference, on_error="skip")
        results["likelihood"] = ipt(load_model(args.model), [r.atoms for r in records[: args.ipt_structures]])
    report = report_markdown(results)
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
