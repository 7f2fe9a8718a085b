"""`ase-llmgen relax`: relax the crystals of an ASE database with a registered calculator."""

from __future__ import annotations

import argparse
import json


def parse_settings(items: list[str] | None) -> dict:
    """``["device=cpu", "model=7net-0"]`` -> settings; a value reads as JSON when it can (numbers, true)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set device=cpu")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``relax`` (kept here so the top-level parser stays short)."""
    p.add_argument("database", help="ASE database of crystals (e.g. from 'generate')")
    p.add_argument(
        "-o", "--output", help="write relaxed structures as new rows here (default: results onto the input's rows)"
    )
    p.add_argument("--calculator", default="chgnet", help="registered calculator (see 'plugins')")
    p.add_argument(
        "--set", dest="settings", action="append", metavar="KEY=VALUE", help="calculator setting (repeatable)"
    )
    p.add_argument("--selection", help="ASE db selection of rows, e.g. 'natoms<10'")
    p.add_argument("--max", dest="max_relax", type=int, help="relax a seeded random subset of this many rows")
    p.add_argument("--seed", type=int, default=0, help="seed of that subset (default 0)")
    p.add_argument("--all", dest="all_rows", action="store_true", help="relax invalid rows too (default: valid only)")
    p.add_argument("--fmax", type=float, default=0.1, help="force tolerance in eV/A (default 0.1)")
    p.add_argument("--steps", type=int, default=500, help="optimizer step limit (default 500)")
    p.add_argument("--time-limit", dest="time_limit", type=float, default=60.0, help="seconds per crystal (default 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_relax(args: argparse.Namespace) -> int:
    """Run ``relax`` and print a one-line JSON summary."""
    from ase_llmgen.relax.runner import relax_database

    if args.max_relax is not None and args.max_relax < 1:
        raise ValueError(f"--max {args.max_relax}: relax at least 1 row")
    summary = relax_database(
        args.database,
        args.output,
        calculator=args.calculator,
        settings=parse_settings(args.settings),
        selection=args.selection,
        max_relax=args.max_relax,
        seed=args.seed,
        only_valid=not args.all_rows,
        fmax=args.fmax,
        steps=args.steps,
        time_limit=args.time_limit,
        progress=not args.quiet,
    )
    e_hulls = [e for e in summary.pop("e_above_hull") if e is not None]
    summary["n_with_e_above_hull"] = len(e_hulls)
    summary["metastable"] = sum(e <= 0.1 for e in e_hulls)
    summary["stable"] = sum(e <= 0.0 for e in e_hulls)
    print(json.dumps(summary))
    return 0
