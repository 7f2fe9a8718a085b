"""The ``ase-llmgen`` command line.

Exit codes: 0 success, 1 bad input or failed run (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sqlite3
import sys
from pathlib import Path

EPILOG = """examples:
  ase-llmgen generate -n 100 -o crystals.db                  # built-in wyckoff model (MP-20 train)
  ase-llmgen generate -n 20 -o nacl.db --formula NaCl --spacegroup 225
  ase db crystals.db 'valid=True,sg_match=True'              # query what met its conditions
  ase-llmgen check any.db                                    # (re)compute checks in place
  ase-llmgen mutate crystals.db -o mutants.db --operator llm_infill
  ase-llmgen search -o ga.db --composition Li2Fe2O4 --generations 4   # ase_ga search, CHGNet (resumable)
  ase-llmgen relax crystals.db                               # CHGNet: energies, E_hull as keys
  ase-llmgen evaluate crystals.db                            # against the shipped MP-20 data
  ase-llmgen train --config mp20 --time-limit-min 60        # MP-20 train/val recipe; rerun to resume
  ase-llmgen plugins                                         # what is registered
"""


def _cmd_plugins(args: argparse.Namespace) -> int:
    from ase_llmgen import plugins

    print("plugin modules:")
    for name in plugins.plugin_names():
        print(f"  {name}")
    for title, records in (
        ("codecs", plugins.codecs()),
        ("model families", plugins.model_families()),
        ("generators", plugins.generators()),
        ("mutators", plugins.mutators()),
        ("checks", plugins.checks()),
        ("calculators", plugins.calculators()),
    ):
        print(f"{title}:")
        for name, rec in records.items():
            keys = f" [keys: {', '.join(rec.keys)}]" if getattr(rec, "keys", None) else ""
            print(f"  {name:22s} {rec.description}{keys}")
    from ase_llmgen.models.bundle import BUILTIN_MODELS

    print("built-in models (--model NAME):")
    for name, description in BUILTIN_MODELS.items():
        print(f"  {name:22s} {description}")
    return 0


def _read_structures(paths: list[str]):
    from ase_llmgen.data.readers import read_records

    for path in paths:
        records, _ = read_records(path)
        yield from (r.atoms for r in records)


def _cmd_encode(args: argparse.Namespace) -> int:
    from ase_llmgen.plugins import get_codec

    codec = get_codec(args.codec)
    texts = [codec.encode(atoms) for atoms in _read_structures(args.files)]
    print("\n\n".join(texts))
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from ase_llmgen.checks.files import write_crystal_file
    from ase_llmgen.plugins import get_codec
    from ase_llmgen.text.errors import CrystalTextError

    codec = get_codec(args.codec)
    source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    blocks = [b for b in source.split("\n\n") if b.strip()]
    images = []
    for n, block in enumerate(blocks, start=1):
        try:
            images.append(codec.decode(block))
        except CrystalTextError as exc:
            raise CrystalTextError(f"{args.file}: structure {n}: {exc}") from exc
    if args.output:
        write_crystal_file(args.output, ((atoms, {}) for atoms in images))
    else:
        for atoms in images:
            print(atoms.get_chemical_formula(), atoms.cell.cellpar().round(3).tolist())
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ase_llmgen.checks.database import check_database

    updated, skipped = check_database(args.database, args.selection, args.symprec, progress=not args.quiet)
    print(
        f"checked {updated} rows of {args.database}" + (f"; left {skipped} non-crystal rows alone" if skipped else "")
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ase_llmgen.training import TrainConfig, train

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    try:
        config = TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig(**overrides)
    except UnicodeDecodeError as exc:  # a binary file given as the config: name it
        raise ValueError(f"{args.config}: not a text file ({exc})") from exc
    if not config.data:
        raise ValueError("no training data: give --data or 'data' in the config file")
    state = train(config)
    print(json.dumps(state))
    return 0


def _conditions_from_args(args: argparse.Namespace):
    from ase_llmgen.text.prompts import Conditions

    return Conditions(
        args.formula,
        args.spacegroup,
        args.formation_energy,
        args.band_gap,
        args.e_above_hull,
        formula_units=getattr(args, "formula_units", None),
    )


def _sample_settings(args: argparse.Namespace):
    """The one SampleSettings of a command: its sampling options (those it has), defaults for the rest."""
    from ase_llmgen.sampling.settings import FIELDS, SampleSettings

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    if getattr(args, "elements", None):
        given["elements"] = tuple(e.strip() for e in args.elements.split(","))
    # Switches that say "off" on the command line.
    for flag, name in (
        ("unconstrained", "constrained"),
        ("keep_invalid", "require_valid"),
        ("keep_supergroups", "exact_spacegroup"),
    ):
        if getattr(args, flag, False):
            given[name] = False
    if getattr(args, "prompt_only_formula", False):
        given["enforce_formula"] = False
    return SampleSettings.of(**given)


def _cmd_generate(args: argparse.Namespace) -> int:
    from ase_llmgen.sampling.run import generate_to_file

    summary = generate_to_file(
        args.output,
        args.n,
        model=args.model,
        conditions=_conditions_from_args(args),
        settings=_sample_settings(args),
        seed=args.seed,
        symprec=args.symprec,
        progress=not args.quiet,
        require=tuple(args.require or ()),
    )
    print(json.dumps(summary))
    if summary.get("duplicates"):
        print(
            f"ase-llmgen: {args.output} holds {summary['duplicates']} duplicate rows of this request (same batch "
            "and sample, from runs before ase-llmgen shared work between runs); each is counted once",
            file=sys.stderr,
        )
    if not summary["complete"]:
        have = summary["already_there"] + summary["written"]
        print(
            f"ase-llmgen: only {have} of {args.n} crystals in {args.output}: the redraw budget ran out "
            f"({summary['drawn']} drawn, {summary['invalid']} structurally invalid, "
            f"{summary['unparseable']} unparseable). "
            "Loosen the settings (e.g. --max-atoms / --min-atoms) or rerun to top up.",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_mutate(args: argparse.Namespace) -> int:
    from ase_llmgen.sampling.run import mutate_database

    summary = mutate_database(
        args.database,
        args.output,
        args.operator,
        model=args.model or "default",
        settings=_sample_settings(args),
        seed=args.seed,
        selection=args.selection,
        per_parent=args.per_parent,
        symprec=args.symprec,
        progress=not args.quiet,
    )
    print(json.dumps(summary))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from ase_llmgen.ga.search import SearchSettings, run_search

    fields = SearchSettings.__dataclass_fields__
    settings = SearchSettings(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    try:
        summary = run_search(args.output, settings, progress=not args.quiet)
    except RuntimeError as exc:  # the search cannot go on (e.g. no operator makes offspring); rows so far are kept
        print(f"ase-llmgen: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ase_llmgen.metrics.cli import run_evaluate

    return run_evaluate(args)


def _cmd_relax(args: argparse.Namespace) -> int:
    from ase_llmgen.relax.cli import run_relax

    return run_relax(args)


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False, what: str = ""):
    """An argparse type: ``kind`` within [low, high] (or (low, high] with ``low_open``), named in the error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < low or (low_open and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return value

    return parse


_SYMPREC = _number(float, 0.0, low_open=True, what="a tolerance in A must be > 0")


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS
        if action.option_strings and not silent and "(default" not in text:
            text += " (default: %(default)s)"
        return text


def _config_defaults(p: argparse.ArgumentParser) -> None:
    """``train`` options default to the config file, else to TrainConfig: say so in their help."""
    from ase_llmgen.training.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    for action in p._actions:
        field = fields.get(action.dest)
        if field is not None and action.option_strings:
            value = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
            action.help = (action.help + " " if action.help else "") + f"(default: the config's, else {value!r})"


def build_parser() -> argparse.ArgumentParser:
    from ase_llmgen.registry import DEFAULT_CODEC

    parser = argparse.ArgumentParser(
        prog="ase-llmgen",
        description="Generate and mutate crystals with language models, into ASE databases.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        parser_class=functools.partial(argparse.ArgumentParser, formatter_class=_HelpFormatter),
    )

    p = sub.add_parser("plugins", help="list registered codecs, models, generators, mutators, checks")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("encode", help="write structures (CIF, extxyz, ASE db, CDVAE CSV, ...) as crystal text")
    p.add_argument("files", nargs="+", help="structure files")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="text format (see 'plugins')")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("decode", help="read crystal text (blocks separated by blank lines) into structures")
    p.add_argument("file", help="text file, or - for standard input")
    p.add_argument("-o", "--output", help="write with ASE (.cif, .extxyz, .db, ...); default: print a summary")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="text format (see 'plugins')")
    p.set_defaults(func=_cmd_decode)

    p = sub.add_parser("check", help="(re)run structure checks over an ASE database, updating rows in place")
    p.add_argument("database")
    p.add_argument("--selection", default=None, help="ASE db selection, e.g. 'natoms<10' (default: all rows)")
    p.add_argument("--symprec", type=_SYMPREC, default=0.2, help="spglib tolerance in A (paper: 0.2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("train", help="train or fine-tune a model (resumes from <out>/checkpoint)")
    p.add_argument(
        "--config", help="TOML or YAML file with TrainConfig keys, or a shipped recipe by name (e.g. 'mp20')"
    )
    p.add_argument("--data", help="training structures (CDVAE CSV, ASE db, any ASE file)")
    p.add_argument("--val-data", dest="val_data", help="validation structures (default: hold out a fraction of --data)")
    p.add_argument(
        "--extra-data",
        dest="extra_data",
        action="append",
        help="more training-only structures, kept out of the validation split (repeatable)",
    )
    p.add_argument("--out", help="output folder")
    p.add_argument("--family", choices=["scratch", "lora"])
    p.add_argument("--codec", help="crystal text format, a registered codec (see 'plugins')")
    p.add_argument("--base", help="LoRA base: 'smollm2' or a local Hugging Face model folder")
    p.add_argument("--init-from", dest="init_from", help="continue from a model folder ('default' = the shipped model)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="bf16: autocast matmuls (weights stay fp32); fp32 on a CPU without native bf16",
    )
    p.add_argument("--time-limit-min", dest="time_limit_min", type=float, help="pause (after saving) after this long")
    p.add_argument("--on-error", dest="on_error", choices=["raise", "skip"], help="bad data rows")
    _config_defaults(p)
    p.set_defaults(func=_cmd_train)

    from ase_llmgen.sampling.settings import DEFAULTS  # sampling defaults are written once, there

    def sampling_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            help="model folder, a built-in model ('wyckoff', generate's choice unless --band-gap is asked; "
            "'default', the paper's format, the operators' choice) or 'smollm2' (default: chosen per command)",
        )
        p.add_argument(
            "--temperature",
            type=_number(float, 0.0, what="a temperature must be >= 0"),
            default=DEFAULTS.temperature,
            help="sampling temperature (paper: 0.7 or 1.0; 0 = greedy)",
        )
        p.add_argument(
            "--cell-temperature",
            dest="cell_temperature",
            type=_number(float, 0.0, what="a temperature must be >= 0"),
            default=DEFAULTS.cell_temperature,
            help="temperature of the lines that write the cell (wyckoff: the group too), the sites at --temperature; "
            "default: the model's own (built-in wyckoff: 0.9, chosen on MP-20 val's cell sizes and validity), else "
            "--temperature throughout (the paper; give the same value as --temperature for that). A lower "
            "--temperature alone shrinks cells (docs/benchmarks.md, 'Cell size')",
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the random draws (a rerun continues its stream)")
        p.add_argument("--symprec", type=_SYMPREC, default=0.2, help="spglib tolerance for the space-group check")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("generate", help="sample crystals into an ASE database (or CIF/extxyz)")
    p.add_argument(
        "-n",
        type=_number(int, 1, what="ask for at least 1 crystal"),
        required=True,
        help="number of crystals wanted (a rerun with the same settings tops up to n)",
    )
    p.add_argument("-o", "--output", required=True, help="out.db (resumable) or a file ASE can write")
    sampling_options(p)
    p.add_argument(
        "--top-p",
        dest="top_p",
        type=_number(float, 0.0, 1.0, low_open=True, what="top-p is a probability mass in (0, 1]"),
        default=DEFAULTS.top_p,
        help="nucleus sampling mass (paper: 0.9; 1 = off)",
    )
    p.add_argument("--formula", help="condition: chemical formula, e.g. LiFePO4")
    p.add_argument(
        "--formula-units",
        dest="formula_units",
        type=_number(int, 1, what="need >= 1"),
        help="with --formula: that many formula units per cell (the grammar holds the site count to it)",
    )
    p.add_argument("--spacegroup", type=int, help="condition: space-group number 1-230")
    p.add_argument("--e-above-hull", dest="e_above_hull", type=float, help="condition: E_hull in eV/atom")
    p.add_argument("--band-gap", dest="band_gap", type=float, help="condition: band gap in eV")
    p.add_argument("--formation-energy", dest="formation_energy", type=float, help="condition: eV/atom")
    p.add_argument(
        "--max-atoms", dest="max_atoms", type=int, default=DEFAULTS.max_atoms, help="at most this many sites per cell"
    )
    p.add_argument("--elements", help="comma-separated elements the model may use (default: H to Pu)")
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_number(int, 1, what="need >= 1"),
        default=DEFAULTS.batch_size,
        help="samples decoded together, at most (fewer when fewer are still wanted)",
    )
    p.add_argument("--unconstrained", action="store_true", help="no grammar constraints (for comparison)")
    p.add_argument(
        "--formula-first",
        dest="formula_first",
        action="store_true",
        help="without --formula: the model first writes a formula (and its formula units, if it learnt them) "
        "into its own prompt, then a crystal the grammar holds to it (docs/guide.md, 'Formula first')",
    )
    p.add_argument(
        "--prompt-only-formula",
        dest="prompt_only_formula",
        action="store_true",
        help="with --formula: only ask for it in the prompt; by default the grammar also enforces it",
    )
    p.add_argument(
        "--keep-invalid",
        dest="keep_invalid",
        action="store_true",
        help="keep structurally invalid samples (redraw only unparseable ones), e.g. to measure validity; "
        "by default they are redrawn. Compositionally invalid samples (SMACT) are always kept, marked "
        "comp_valid=False and valid=False",
    )
    p.add_argument(
        "--keep-supergroups",
        dest="keep_supergroups",
        action="store_true",
        help="with --spacegroup N and a model whose grammar writes the group (wyckoff): keep samples in which "
        "spglib finds a supergroup of N (special positions); by default they are redrawn, e.g. to measure the model",
    )
    p.add_argument(
        "--min-atoms", dest="min_atoms", type=int, default=DEFAULTS.min_atoms, help="at least this many sites per cell"
    )
    p.add_argument(
        "--min-distance",
        dest="min_distance",
        type=float,
        default=DEFAULTS.min_distance,
        help="distance guard: never sample two sites closer than this, in A (default 0 = off; invalid samples "
        "are redrawn instead, which gives better crystals, see docs/design.md)",
    )
    p.add_argument(
        "--require",
        action="append",
        metavar="KEY",
        help="redraw samples unless this boolean check key is True, e.g. plausible (repeatable)",
    )
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "mutate",
        help="apply a GA mutation operator to every structure of a database",
        description="Apply a mutation operator to each crystal row of DATABASE (or those --selection picks), "
        "writing children to OUTPUT with parent_id, operator and description keys and the checks. "
        "Operators: llm_infill (the default; the paper's infill: the model names an element for a masked one, "
        "kept if of similar ionic radius and the same charge), uniform_substitution (the baseline: a random "
        "swap of similar radius), llm_regeneration (a new crystal of the parent's formula); plugins add more. "
        "A rerun skips parents that already have --per-parent children.",
    )
    p.add_argument("database", help="parents: an ASE database")
    p.add_argument("-o", "--output", required=True, help="children: an ASE database (created or added to)")
    p.add_argument("--operator", default="llm_infill", help="registered mutator (see 'plugins')")
    p.add_argument(
        "--selection", default=None, help="ASE db selection of the parents, e.g. 'valid=True' (default: all rows)"
    )
    p.add_argument(
        "--per-parent",
        dest="per_parent",
        type=_number(int, 1, what="need >= 1"),
        default=1,
        help="children wanted per parent (failed attempts are counted, not retried)",
    )
    sampling_options(p)
    p.set_defaults(func=_cmd_mutate)

    p = sub.add_parser("search", help="ase_ga structure search: LLM and classical operators, relaxed with a calculator")
    p.add_argument("-o", "--output", required=True, help="ase_ga database (created, or continued when it exists)")
    p.add_argument("--composition", help="fixed cell content, e.g. Cu6Au2 (8 atoms)")
    p.add_argument(
        "--system",
        help="chemical system, e.g. Li-Fe-O (any composition of it; with --composition: the start composition, "
        "which mutations may then change)",
    )
    p.add_argument(
        "--max-atoms",
        dest="max_atoms",
        type=_number(int, 1, what="need >= 1"),
        help="system search: sites per cell at most (default 12)",
    )
    p.add_argument(
        "--operators",
        choices=["classical", "llm", "mixed"],
        default="mixed",
        help="ase_ga's pairing/strain/permutation/rattle, the model's regeneration (and infill), or both (default)",
    )
    p.add_argument("--start", choices=["llm", "random"], help="start population (default: random for classical)")
    p.add_argument("--population", type=_number(int, 2, what="need >= 2"), default=12)
    p.add_argument(
        "--generations",
        type=_number(int, 0, what="need >= 0"),
        default=4,
        help="generations of population-size offspring (default 4); a rerun with more extends the search",
    )
    p.add_argument("--calculator", default="chgnet", help="registered ASE calculator (see 'plugins')")
    p.add_argument(
        "--score",
        choices=["energy", "e_hull"],
        help="raw_score = -E/atom or -E_hull (default: e_hull with CHGNet when the MP-20 hull data is found)",
    )
    from ase_llmgen.ga.search import SearchSettings  # the search's own sampling defaults (temperature 1.0)

    search_defaults = SearchSettings.__dataclass_fields__
    p.add_argument(
        "--top-p",
        dest="top_p",
        type=_number(float, 0.0, 1.0, low_open=True, what="in (0, 1]"),
        default=search_defaults["top_p"].default,
    )
    p.add_argument("--fmax", type=_number(float, 0.0, low_open=True, what="need > 0"), default=0.1, help="eV/A")
    p.add_argument("--steps", type=_number(int, 1, what="need >= 1"), default=300, help="relaxation steps at most")
    sampling_options(p)
    p.set_defaults(func=_cmd_search, temperature=search_defaults["temperature"].default)

    p = sub.add_parser("relax", help="relax crystals with an ML potential; energies and E_hull as db keys")
    from ase_llmgen.relax.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_relax)

    p = sub.add_parser("evaluate", help="CDVAE metrics, stability and conditioning success of samples")
    p.add_argument("samples", help="ASE db, CIF folder, CSV with a cif column, or any ASE file")
    p.add_argument(
        "--reference",
        default="mp20",
        help="test structures (CSV, db, ...); default mp20: the MP-20 test set shipped in the package; none: skip",
    )
    p.add_argument(
        "--train", default="mp20", help="training structures, for novelty; default mp20: MP-20 train + val (shipped)"
    )
    p.add_argument(
        "--relax", type=int, default=0, help="first relax a random subset of this many valid samples (CHGNet)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that subset")
    p.add_argument("--label", help="name of the run in the report (default: the db's model and temperature)")
    p.add_argument(
        "--read-only", dest="read_only", action="store_true", help="do not write unique/novel keys into the db"
    )
    p.add_argument("--max-reference", dest="max_reference", type=int)
    p.add_argument("--json", help="write results as JSON here")
    p.add_argument("--markdown", help="write the Table-1 style report here")
    p.add_argument("--plots", help="write PNG plots into this folder")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--model", help="also report this model's perplexity and IPT on the reference structures")
    p.add_argument("--ipt-structures", dest="ipt_structures", type=int, default=200, help="how many, for --model")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ase-llmgen``."""
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):  # transformers' own "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `ase-llmgen encode ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("ase-llmgen: interrupted; finished work is saved", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, ModuleNotFoundError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"ase-llmgen: error: {message}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # a database the code did not open through open_db: name the ones given
        named = [str(v) for v in vars(args).values() if isinstance(v, str) and v.endswith(".db")]
        print(f"ase-llmgen: error: {', '.join(named) or 'database'}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
