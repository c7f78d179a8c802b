"""The pipeline's steps: their names, order and dependencies, without Prefect.

A run is made of steps, written as text on the command line, in Prefect parameters and in
``run.json``: ``bootstrap`` (toy configs only), ``curate``, ``train:1`` ... ``train:K``,
``eval:base`` (the starting model) and ``eval`` (the last trained stage); with
``curriculum.mode: rescored``, ``rescore:k`` after ``train:k`` (k < K) stages the problems not yet
trained again, by the SE of stage k's model, and ``train:k+1`` reads its curriculum from there
(`curriculum_step`). `Step.parse` reads one
and `str` writes it back; steps sort in the order they run. `plan_steps` checks, before anything
runs, that every input a step needs comes from an earlier step or from a reused run.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sent.config import SentConfig
from sent.errors import SentError

_GRAMMAR = re.compile(r"^(bootstrap|curate|(train|rescore):(\d+)|eval:base|eval)$")
_KINDS = "bootstrap, curate, train:K, rescore:K, eval:base, eval"
# the position of each kind of step in a run; train:k and rescore:k sort by k within rank 2, rescore
# after the train step of the same stage
_RANK = {"bootstrap": 0, "curate": 1, "train": 2, "rescore": 2, "eval:base": 3, "eval": 4}


class StepError(SentError, RuntimeError):
    """A pipeline step that cannot run as asked (the message says what to run or pass instead)."""


@dataclass(frozen=True)
class Step:
    """One step of a run: ``kind`` is bootstrap, curate, train, rescore, eval:base or eval; ``stage``
    is the curriculum stage of a train step, or the stage whose model a rescore step samples
    (1-based), and None for the others."""

    kind: str
    stage: int | None = None

    @classmethod
    def parse(cls, text: str) -> Step:
        """``"train:2"`` -> ``Step("train", 2)``; surrounding spaces are ignored."""
        m = _GRAMMAR.match(text.strip())
        if m is None:
            raise StepError(f"unknown step {text!r}: use {_KINDS}")
        return cls(m.group(2), int(m.group(3))) if m.group(3) else cls(m.group(1))

    @classmethod
    def train(cls, stage: int) -> Step:
        return cls("train", stage)

    @classmethod
    def rescore(cls, stage: int) -> Step:
        return cls("rescore", stage)

    @property
    def is_train(self) -> bool:
        return self.kind == "train"

    @property
    def is_rescore(self) -> bool:
        return self.kind == "rescore"

    @property
    def k(self) -> int:
        """The stage of a train or rescore step; other steps have none."""
        if self.stage is None:
            raise StepError(f"{self} is not a train or rescore step: it has no stage")
        return self.stage

    def __str__(self) -> str:
        return f"{self.kind}:{self.stage}" if self.stage is not None else self.kind

    def __lt__(self, other: Step) -> bool:
        return self._position() < other._position()

    def _position(self) -> tuple[int, int, int]:
        return _RANK[self.kind], self.stage or 0, int(self.is_rescore)

    def depends_on(self, upstream: Step) -> bool:
        """Whether this step's artefact is derived from ``upstream``'s, so that rerunning
        ``upstream`` outdates it. The toy bootstrap feeds every step; the curriculum feeds training
        and the final evaluation; stage k feeds the later stages, the rescore steps from k on and
        the final evaluation; rescore:k feeds the later rescores and stages after k."""
        if self == upstream or upstream.kind == "bootstrap":
            return True
        if upstream.kind == "curate":
            return self.is_train or self.is_rescore or self.kind == "eval"
        if upstream.is_train or upstream.is_rescore:
            if self.kind == "eval":
                return True
            if self.is_train:
                return self.k > upstream.k
            return self.is_rescore and self.k >= upstream.k
        return False


def default_steps(cfg: SentConfig) -> list[str]:
    """Every step of a full run of ``cfg``, in order."""
    first = ["bootstrap"] if cfg.toy is not None else []
    k_max = cfg.curriculum.n_stages
    trains = [str(Step.train(k)) for k in range(1, k_max + 1)]
    if cfg.curriculum.mode == "rescored":
        trains = [str(s) for s in sorted([*map(Step.parse, trains), *(Step.rescore(k) for k in range(1, k_max))])]
    return [*first, "curate", *trains, "eval:base", "eval"]


def curriculum_step(cfg: SentConfig, stage: int) -> str:
    """The step whose curriculum ``train:stage`` reads: the curation, or with ``curriculum.mode:
    rescored`` the re-staging after the stage before (stage 1 always reads the curation)."""
    return "curate" if stage == 1 or cfg.curriculum.mode == "static" else str(Step.rescore(stage - 1))


def plan_steps(cfg: SentConfig, steps: Iterable[str] | None, reused: Collection[str]) -> list[str]:
    """Validate and order ``steps`` (all of them when None); every input a step needs must come
    from an earlier step of this run or from ``reused`` (the step names of a reused run's
    artefacts), so a run never fails halfway for a missing input."""
    if not steps:
        return default_steps(cfg)
    texts = list(steps)
    bad = [s for s in texts if _GRAMMAR.match(s.strip()) is None]
    if bad:
        raise StepError(f"unknown steps {bad}: use {_KINDS}")
    ordered = sorted({Step.parse(s) for s in texts})
    k_max = cfg.curriculum.n_stages
    available = set(_steps_among(reused))
    for step in ordered:
        if step.kind == "bootstrap" and cfg.toy is None:
            raise StepError(f"bootstrap needs a toy section in {cfg.source}")
        if step.is_train:
            if not 1 <= step.k <= k_max:
                raise StepError(f"{step}: the curriculum has stages 1..{k_max} (curriculum.n_stages)")
            source = Step.parse(curriculum_step(cfg, step.k))
            if source not in available:
                raise StepError(f"{step} needs a curriculum: add the {source} step, or reuse a run that has one")
            if step.k > 1 and Step.train(step.k - 1) not in available:
                raise StepError(
                    f"{step} starts from stage {step.k - 1}'s weights: add train:{step.k - 1}, "
                    "or reuse a run that trained it"
                )
        if step.is_rescore:
            if cfg.curriculum.mode != "rescored":
                raise StepError(f"{step} re-stages the curriculum: it needs curriculum.mode=rescored")
            if not 1 <= step.k < k_max:
                raise StepError(f"{step}: rescore steps run between stages, rescore:1..{k_max - 1}")
            for needed in (Step.parse(curriculum_step(cfg, step.k)), Step.train(step.k)):
                if needed not in available:
                    raise StepError(f"{step} needs {needed}: add it, or reuse a run that has it")
        if step.kind == "eval" and not any(a.is_train for a in available):
            raise StepError("eval evaluates the last trained stage: add a train step, or reuse a run that trained one")
        available.add(step)
    return [str(s) for s in ordered]


def depends_on(step: str, upstream: str) -> bool:
    """`Step.depends_on` for step names."""
    return Step.parse(step).depends_on(Step.parse(upstream))


def reused_inputs(cfg: SentConfig, planned: Iterable[str], reused: Collection[str]) -> list[str]:
    """The step names among ``reused`` whose artefacts the ``planned`` steps read."""
    steps = [Step.parse(s) for s in planned]
    needed: set[str] = set()
    for step in steps:
        if step.is_train or step.is_rescore:
            needed.add(curriculum_step(cfg, step.k))
        if step.is_train and step.k > 1:
            needed.add(str(Step.train(step.k - 1)))
        if step.is_rescore:
            needed.add(str(Step.train(step.k)))
    if Step("eval") in steps and not any(s.is_train for s in steps):
        needed.add(last_trained(reused))
    return sorted((needed - {str(s) for s in steps}) & set(reused))


def last_trained(steps: Iterable[str]) -> str:
    """The highest trained stage among the step names ``steps`` (a run's artefacts, say)."""
    return str(max(s for s in _steps_among(steps) if s.is_train))


def _steps_among(names: Iterable[str]) -> list[Step]:
    """The names that are steps, parsed (a run's record may hold other artefacts too)."""
    return [Step.parse(n) for n in names if _GRAMMAR.match(n.strip())]
