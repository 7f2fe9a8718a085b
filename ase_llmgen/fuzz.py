"""Fuzzing the parsers of text that model output and users feed in: which parsers, what
counts as a defect, and mutations of real texts.

Used by ``tests/test_fuzz.py`` (hypothesis, in every test run) and ``bench/fuzz.py`` (10^5
inputs and more, on purpose).  A *defect* is an exception other than the parser's documented
error type, or an accepted result that is no usable crystal (non-finite or zero-volume cell,
non-finite positions, no atoms, a species that is no element).  Hangs are the caller's to time.
"""

from __future__ import annotations

import functools
import math
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ase_llmgen.text import cif, paper, wyckoff
from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.grammar import DEFAULT_ELEMENTS, CompositionGrammar, CrystalGrammar
from ase_llmgen.text.paper import mask_element
from ase_llmgen.text.prompts import Conditions, ParsedPrompt, generation_prompt, infill_prompt
from ase_llmgen.text.prompts import parse_prompt as _parse_prompt


@dataclass(frozen=True)
class Parser:
    """A parser under test: the function, the errors it documents, and which seed texts suit it."""

    parse: Callable[[str], Any]
    errors: tuple[type[BaseException], ...]
    seeds: str  # "paper", "cif", "prompt", "formula", "wyckoff", "wyckoff_mult" or "wyckoff_formula"


def _formula(text: str) -> Conditions:
    return Conditions(formula=text)


_GRAMMAR = CrystalGrammar(max_atoms=20)


def _grammar_then_decode(text: str) -> Any:
    """What the sampling grammar accepts must decode: ``None`` if the grammar refuses ``text``.

    The one thing the grammar cannot see is whether three angles form a cell (checked after
    decoding, and such samples are redrawn), so the parser may refuse line 2 and nothing else.
    """
    state = _GRAMMAR.advance(_GRAMMAR.start, text)
    if not _GRAMMAR.can_end(state):
        return None
    try:
        return paper.decode(text)
    except CrystalTextError as exc:
        if exc.line == 2:
            return None
        raise AssertionError(f"the grammar accepts text the parser refuses: {exc}") from exc


def _composition_grammar(text: str) -> CompositionGrammar:
    grammar = CompositionGrammar(text, max_atoms=20)
    grammar.advance(grammar.start, "3.0 3.0 3.0\n90 90 90\n" + grammar.elements[0] + "\n0.00 0.00 0.00\n")
    return grammar


WYCKOFF_LAYOUTS = {  # layout: (multiplicity, formula_line), as random_wyckoff and wyckoff.decode take them
    "wyckoff": (False, False),
    "wyckoff_mult": (True, False),
    "wyckoff_formula": (True, True),
}
_WYCKOFF_GRAMMARS = {  # ~1 s each: they read the Wyckoff tables of all 230 groups
    layout: wyckoff.WyckoffGrammar(max_atoms=20, multiplicity=m, formula_line=f)
    for layout, (m, f) in WYCKOFF_LAYOUTS.items()
}


def _wyckoff_grammar_then_decode(text: str, layout: str = "wyckoff") -> Any:
    """What a wyckoff layout's sampling grammar accepts must decode, to ``min_atoms..max_atoms`` sites: ``None``
    if the grammar refuses ``text``.  Unlike the paper's, these grammars see everything the parser checks (they
    close triclinic cells), so the parser may refuse nothing they accept.
    """
    grammar = _WYCKOFF_GRAMMARS[layout]
    if not grammar.can_end(grammar.advance(grammar.start, text)):
        return None
    try:
        atoms = wyckoff.decode(text, *WYCKOFF_LAYOUTS[layout])
    except CrystalTextError as exc:
        raise AssertionError(f"the wyckoff grammar accepts text the parser refuses: {exc}") from exc
    if not grammar.min_atoms <= len(atoms) <= grammar.max_atoms:
        raise AssertionError(
            f"the wyckoff grammar accepts {len(atoms)} sites, outside {grammar.min_atoms}..{grammar.max_atoms}"
        )
    return atoms


PARSERS: dict[str, Parser] = {
    "paper": Parser(paper.decode, (CrystalTextError,), "paper"),
    "paper_structure": Parser(paper.decode_structure, (CrystalTextError,), "paper"),
    "cif": Parser(cif.decode, (CrystalTextError,), "cif"),
    "prompt": Parser(_parse_prompt, (CrystalTextError,), "prompt"),  # PromptError is a CrystalTextError
    "formula": Parser(_formula, (ValueError,), "formula"),  # what --formula and prompts read
    "composition_grammar": Parser(_composition_grammar, (ValueError,), "formula"),  # a formula the sampler enforces
    "grammar": Parser(_grammar_then_decode, (), "paper"),  # the sampling grammar against the parser
    "wyckoff": Parser(wyckoff.decode, (CrystalTextError,), "wyckoff"),
    "wyckoff_grammar": Parser(_wyckoff_grammar_then_decode, (), "wyckoff"),  # its sampling grammar against it
    "wyckoff_mult": Parser(wyckoff.decode_mult, (CrystalTextError,), "wyckoff_mult"),
    "wyckoff_mult_grammar": Parser(
        functools.partial(_wyckoff_grammar_then_decode, layout="wyckoff_mult"), (), "wyckoff_mult"
    ),
    "wyckoff_formula": Parser(wyckoff.decode_formula, (CrystalTextError,), "wyckoff_formula"),
    "wyckoff_formula_grammar": Parser(
        functools.partial(_wyckoff_grammar_then_decode, layout="wyckoff_formula"), (), "wyckoff_formula"
    ),
}

# Numbers a parser must survive: overflow, underflow, signs, spellings float() accepts but the format does not.
NASTY_NUMBERS = (
    "1" + "0" * 400,
    "0." + "0" * 400 + "1",
    "1e400",
    "1e-400",
    "nan",
    "inf",
    "-inf",
    "-0",
    "-0.0",
    "0",
    "0.0",
    "-1",
    "1e308",
    "999999999999",
    ".5",
    "5.",
    "+3",
    "1_0",
    "\u0663.\u0665",  # Arabic-Indic digits: float() reads them as 3.5
    "0x10",
    "1" * 5000,
)
NASTY_PIECES = NASTY_NUMBERS + (
    "",
    " ",
    "  ",
    "\t",
    "\r",
    "\n",
    "\n\n",
    "\x00",
    "\u00e9",
    "X",
    "G",
    "Xx",
    "[MASK]",
    "D",
    "loop_",
    "_atom_site_occupancy",
    "_symmetry_equiv_pos_as_xyz",
    "'x, y, z'",
    "'-x+1/2, y, z'",
    "data_",
    "#",
    ";",
    "'",
    '"',
    "The spacegroup number is 1.5. ",
    "The chemical formula is ",
    ". ",
)
_ALPHABET = "0123456789.- \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_'\"()[]#;:,/+*"


def mutate(text: str, rng: random.Random, rounds: int | None = None) -> str:
    """``text`` after 1-4 random edits: characters, nasty numbers and pieces, lines moved, spans cut or repeated."""
    for _ in range(rounds if rounds is not None else rng.randint(1, 4)):
        n = len(text)
        i = rng.randint(0, n)
        j = min(n, i + rng.randint(0, 40))
        op = rng.randrange(9)
        if op == 0 and n:  # one character
            k = rng.randrange(n)
            text = text[:k] + rng.choice(_ALPHABET) + text[k + 1 :]
        elif op == 1:  # a nasty piece inserted
            text = text[:i] + rng.choice(NASTY_PIECES) + text[i:]
        elif op == 2:  # a number replaced by a nasty one
            tokens = text.split(" ")
            k = rng.randrange(len(tokens))
            tokens[k] = rng.choice(NASTY_NUMBERS) + ("\n" if tokens[k].endswith("\n") else "")
            text = " ".join(tokens)
        elif op == 3:  # a span cut
            text = text[:i] + text[j:]
        elif op == 4:  # a span repeated (sometimes many times)
            text = text[:j] + text[i:j] * rng.choice((1, 2, 10, 500)) + text[j:]
        elif op in (5, 6):  # a line dropped, duplicated or moved
            lines = text.split("\n")
            k = rng.randrange(len(lines))
            line = lines.pop(k)
            if op == 6 or rng.random() < 0.5:
                lines.insert(rng.randint(0, len(lines)), line)
                if op == 6:
                    lines.insert(rng.randint(0, len(lines)), line)
            text = "\n".join(lines)
        elif op == 7:  # cut off
            text = text[:i]
        else:  # random characters inserted
            text = text[:i] + "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 8))) + text[i:]
    return text


# Fields of a wyckoff text a parser must survive, besides NASTY_NUMBERS.
WYCKOFF_GROUPS = ("0", "00", "231", "999", "-1", "-225", "+225", "0225", "225.0", "2e2", "1" * 400, " 225", "")
WYCKOFF_NUMBERS = ("1e300", "1e-300", "0.1", "0.09", "999.9", "1000.1", "1", "179", "180", "181", "0.00", "1.00")
WYCKOFF_LETTERS = ("", "aa", "a1", "A", "Z", "@", "\u03b1", "[MASK]", "0.50")
WYCKOFF_ELEMENTS = ("", "X", "Xx", "D", "si", "SI", "Uuo", "[MASK]", "0.50", "a")
WYCKOFF_RHOMBOHEDRAL = "166\n4.4 30.5\nTe\na\nBi\nc 0.40\nTe\nc 0.79"  # Bi2Te3, R-3m: a seed of R centering


def random_wyckoff(rng: random.Random, multiplicity: bool = False, formula_line: bool = False) -> str:
    """A text in the wyckoff layout whose fields are now and then absurd: space groups 0, 231, negative or of
    400 digits; lattice lines of the wrong length or of 1e300, nan, 0; letters the group lacks; one free
    coordinate too many or too few; unknown elements; 1 to 2000 orbits.  Some texts have no absurd field.
    ``multiplicity``: the wyckoff_mult layout (``4f``), whose multiplicities are now and then wrong;
    ``formula_line``: the wyckoff_formula layout, whose formula line is now and then not what the orbits make."""
    p = rng.choice((0.0, 0.02, 0.1, 0.3))  # the chance that a field is absurd

    def odd() -> bool:
        return rng.random() < p

    number = rng.randint(1, 230)
    info = wyckoff.group_info(number)
    group = rng.choice(WYCKOFF_GROUPS + NASTY_NUMBERS) if odd() else str(number)
    lattice = []
    for field in wyckoff.LATTICE_FIELDS[info.system]:
        value = str(rng.randint(60, 120)) if field in ("alpha", "beta", "gamma") else f"{rng.uniform(1, 15):.1f}"
        lattice.append(rng.choice(WYCKOFF_NUMBERS + NASTY_NUMBERS) if odd() else value)
    if odd():  # a value too many or too few
        lattice = lattice[:-1] if rng.random() < 0.5 else lattice + lattice[:1]
    lines = [group, " ".join(lattice)]
    orbits = list(info.orbits.values())
    free_orbits = [o for o in orbits if o.dof]  # usable any number of times (every group has the general one)
    placed = []  # (element, letter) of the orbits written, for the formula line
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6, 10, 50, 2000))):
        orbit = rng.choice(orbits if rng.random() < 0.3 else free_orbits)
        element = rng.choice(WYCKOFF_ELEMENTS + NASTY_PIECES) if odd() else rng.choice(DEFAULT_ELEMENTS)
        letter = rng.choice(WYCKOFF_LETTERS + tuple(string.ascii_letters)) if odd() else orbit.letter
        if multiplicity:
            count = (
                rng.choice(("0", "00", "1000", f"0{orbit.multiplicity}", str(2 * orbit.multiplicity), ""))
                if odd()
                else str(orbit.multiplicity)
            )
            letter = count + letter
        dof = max(0, orbit.dof + rng.choice((-1, 1))) if odd() else orbit.dof
        free = [
            rng.choice(NASTY_NUMBERS + WYCKOFF_NUMBERS) if odd() else f"{rng.randrange(100) / 100:.2f}"
            for _ in range(dof)
        ]
        lines += [element, " ".join([letter, *free])]
        placed.append((element, orbit.letter))
    if formula_line:
        counts = wyckoff.cell_counts(info, placed)
        try:
            formula = wyckoff.cell_formula(counts)
        except (KeyError, ValueError):  # an absurd element has no place in formula order
            formula = "".join(f"{e}{n}" for e, n in counts.items())
        if odd():  # a count off by one, or the line in another order
            formula = formula.replace("1", "2", 1) if rng.random() < 0.5 else formula[::-1]
        lines.insert(2, formula)
    if odd():  # a line lost
        del lines[rng.randrange(len(lines))]
    return (rng.choice(("\r\n", " \n", "\n\n")) if odd() else "\n").join(lines) + ("\n" if odd() else "")


def seed_texts(structures: Sequence[Any]) -> dict[str, list[str]]:
    """Real texts to mutate, from crystals (``ase.Atoms`` or ``Structure``): per seed kind of :data:`PARSERS`."""
    crystals = [paper.encode(s) for s in structures]
    cifs = [cif.encode(s) for s in structures] + [cif.encode(s, symprec=0.1) for s in structures]
    prompts: list[str] = []
    for k, (s, text) in enumerate(zip(structures, crystals)):
        formula = s.get_chemical_formula(empirical=True) if hasattr(s, "get_chemical_formula") else s.formula
        conditions = Conditions(formula=formula.replace(" ", ""), spacegroup=1 + k % 230, band_gap=0.5 * k)
        prompts.append(generation_prompt(conditions) + text)
        prompts.append(generation_prompt() + text)
        element = text.split("\n")[2]
        prompts.append(infill_prompt(mask_element(text, element)) + element)
    formulas = [p.split("The chemical formula is ")[1].split(". ")[0] for p in prompts if "formula is" in p]
    wyckoffs = [wyckoff.encode(s) for s in structures] + [WYCKOFF_RHOMBOHEDRAL]
    wyckoff_mults = [wyckoff.encode_mult(s) for s in structures]
    wyckoff_formulas = [wyckoff.encode_formula(s) for s in structures]
    return {
        "paper": crystals,
        "cif": cifs,
        "prompt": prompts,
        "formula": formulas + ["Sm(GdS2)2", "LiFePO4"],
        "wyckoff": wyckoffs,
        "wyckoff_mult": wyckoff_mults,
        "wyckoff_formula": wyckoff_formulas,
    }


def _atoms_defect(atoms: Any) -> str | None:
    from ase import Atoms
    from pymatgen.core import Structure

    if isinstance(atoms, Structure):
        cell, frac = atoms.lattice.matrix, atoms.frac_coords
        volume, symbols = atoms.lattice.volume, [site.specie.symbol for site in atoms]
    elif isinstance(atoms, Atoms):
        cell, frac = np.array(atoms.cell), atoms.get_scaled_positions(wrap=False)
        volume, symbols = abs(atoms.cell.volume), atoms.get_chemical_symbols()
    else:
        return f"returned a {type(atoms).__name__}, not a crystal"
    if len(symbols) == 0:
        return "accepted a crystal with no atoms"
    if not np.isfinite(cell).all() or not math.isfinite(volume) or volume <= 0:
        return f"accepted a cell with volume {volume} (cell {cell.tolist()})"
    if not np.isfinite(frac).all():
        return "accepted non-finite positions"
    bad = sorted(set(symbols) - paper.ELEMENTS)
    if bad:
        return f"accepted species that are no elements: {bad}"
    return None


def defect(name: str, text: str) -> str | None:
    """Run parser ``name`` on ``text``: ``None`` when it behaved (a result or its documented error), else why not."""
    parser = PARSERS[name]
    try:
        out = parser.parse(text)
    except parser.errors:
        return None
    except Exception as exc:  # anything else is a defect: report it, do not raise
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    if isinstance(out, ParsedPrompt):
        values = [v for v in out.conditions.as_dict().values() if isinstance(v, float)]
        return None if all(math.isfinite(v) for v in values) else f"accepted non-finite conditions {out.conditions}"
    if out is None or isinstance(out, (Conditions, CompositionGrammar)):
        return None
    return _atoms_defect(out)
