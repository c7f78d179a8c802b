"""The paper's ablation as one plan: arms (named sets of overrides) x seeds on one shared curation.

An arm is a name for config overrides of ``training.*`` and ``curriculum.*`` (`BUILTIN_ARMS`,
plus ``ablation.arms`` in the config). Every arm x seed trains every stage of its curriculum and
is evaluated on the same held-out problems with the same sampling seeds, so arms compare per
problem, in pairs (common random numbers):

- the toy world, the bootstrap model and the SE scores are shared: an arm's curriculum is
  restaged from the one curation (`sent.curate.restage`), never sampled again;
- the seed of a replicate is ``training.seed`` (batch order and rollouts); the evaluation's
  sampling seed stays the config's ``seed`` for every arm and replicate.

This module plans; the Prefect flow `flows/ablation.py` runs the plan, and
`sent.ablation_report` summarises what it left.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sent.config import BUILTIN_ARMS, SentConfig
from sent.config_base import ConfigError
from sent.config_loading import load_config
from sent.errors import SentError

_ARM_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ARM_SECTIONS = ("training", "curriculum")
"""What an arm may change: the rest (model, data, sampling, scoring, evaluation, seed) is shared,
or the arms would not share a curation and an evaluation."""


class AblationError(SentError, ValueError):
    """An ablation that cannot run as asked (an unknown arm, an arm that changes a shared setting)."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class ArmRun:
    """One arm x seed: its overrides on top of the config's, and where it writes."""

    arm: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.arm}/seed-{self.seed}"


@dataclass(frozen=True)
class AblationPlan:
    config: str
    base_overrides: tuple[str, ...]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    reference: str
    runs: tuple[ArmRun, ...] = field(default=())


def known_arms(cfg: SentConfig) -> dict[str, tuple[str, ...]]:
    """The built-in arms with the config's own (``ablation.arms``, which may redefine a built-in)."""
    return {**BUILTIN_ARMS, **{k: tuple(v) for k, v in cfg.ablation.arms.items()}}


def parse_list(text: str | Sequence[str] | None, what: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` as a list of non-empty names, in order, without repeats."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            raise AblationError(f"empty name in {what} {text!r}")
        if item not in out:
            out.append(item)
    return out


def parse_seeds(text: str | Sequence[int | str] | None) -> list[int]:
    """``"0,1,2"`` or ``[0, 1, 2]`` as a list of integers."""
    items = text if text is None or isinstance(text, str) else [str(t) for t in text]
    out = []
    for item in parse_list(items, "seeds"):
        try:
            out.append(int(item))
        except ValueError:
            raise AblationError(f"seed {item!r} is not an integer") from None
    return out


def plan_ablation(
    config: str | Path,
    *,
    arms: str | Sequence[str] | None = None,
    seeds: str | Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    reference: str | None = None,
) -> AblationPlan:
    """Validate every arm x seed before anything runs: an unknown arm, an override key the config
    does not have, or an arm that changes a shared section is an error naming the arm."""
    base = load_config(config, list(overrides))
    table = known_arms(base)
    names = parse_list(arms, "arms") or list(base.ablation.default_arms)
    unsafe = [a for a in names if not _ARM_NAME_RE.fullmatch(a) or ".." in a]
    if unsafe:  # an arm's name is a directory under --out: "../x" or "/x" would write outside it
        raise AblationError(f"arm name(s) {unsafe} must be letters, digits, '_', '-' or '.' (not '..')")
    unknown = [a for a in names if a not in table]
    if unknown:
        raise AblationError(f"unknown arm(s) {unknown}; known: {sorted(table)} (or declare them in ablation.arms)")
    reference = reference or base.ablation.reference
    if reference not in names:
        raise AblationError(
            f"the reference arm {reference!r} is not among the arms {names}: add it, or set --reference"
        )
    seed_list = parse_seeds(seeds) or list(base.ablation.seeds)
    if not seed_list:
        raise AblationError("no seeds: give --seeds, or ablation.seeds in the config")
    shared = {k: v for k, v in base.model_dump(mode="json").items() if k not in (*ARM_SECTIONS, "overrides")}
    checked = []
    for name in names:
        arm_overrides = table[name]
        bad = [o for o in arm_overrides if o.partition("=")[0].strip().split(".")[0] not in ARM_SECTIONS]
        if bad:
            raise AblationError(
                f"arm {name!r}: {bad} change a shared setting; an arm may set only {', '.join(ARM_SECTIONS)}.*"
            )
        try:
            cfg = load_config(config, [*overrides, *arm_overrides])
        except ConfigError as exc:
            raise AblationError(f"arm {name!r}: {exc}") from None
        dumped = cfg.model_dump(mode="json")
        changed = [k for k, v in shared.items() if dumped[k] != v]
        if changed:  # e.g. an override that reaches a shared section through a validator
            raise AblationError(f"arm {name!r} changes the shared section(s) {changed}")
        checked.append((name, arm_overrides))
    # seed by seed: an ablation stopped part way has every arm of its first seeds
    runs = [
        ArmRun(name, seed, (*overrides, *arm_overrides, f"training.seed={seed}"))
        for seed in seed_list
        for name, arm_overrides in checked
    ]
    return AblationPlan(
        config=str(config),
        base_overrides=tuple(overrides),
        arms=tuple(Arm(n, table[n]) for n in names),
        seeds=tuple(seed_list),
        reference=reference,
        runs=tuple(runs),
    )
