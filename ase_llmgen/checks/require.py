"""Requirements on generated structures: boolean check keys that must come out True (e.g. ``plausible``).

``generate --require plausible`` redraws every sample whose ``plausible`` key is False, as
invalid samples are redrawn; any boolean key of a registered check may be required
(``valid``, ``plausible``, ``sg_match``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ase import Atoms

from ase_llmgen.plugins import checks


def requirement(keys: Sequence[str], symprec: float | None = None) -> Callable[[Atoms], bool] | None:
    """A predicate that runs only the checks producing ``keys`` and accepts when all are True.

    ``None`` for no keys. Raises ``KeyError`` naming the known keys for one no check produces.
    """
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        return None
    registered = checks()
    needed = {}
    for key in keys:
        owners = [c for c in registered.values() if key in c.keys]
        if not owners:
            known = sorted({k for c in registered.values() for k in c.keys})
            raise KeyError(f"no registered check gives a key {key!r}; keys: {', '.join(known)}")
        needed[owners[0].name] = owners[0]

    def accept(atoms: Atoms) -> bool:
        from ase_llmgen.checks.database import _takes_symprec

        found: dict = {}
        conditions = dict(atoms.info.get("conditions") or {})
        for check in needed.values():
            options = {"symprec": symprec} if symprec is not None and _takes_symprec(check.run) else {}
            try:
                found.update(check.run(atoms, conditions, **options))
            except Exception:  # a check that cannot judge a sample does not vouch for it
                return False
        return all(found.get(k) is True for k in keys)

    return accept
