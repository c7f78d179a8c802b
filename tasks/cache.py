"""The content-addressed cache policy of the expensive deterministic tasks.

A task is cached on a key built from its inputs' digests, the config sections it reads and the
code version (`ArtefactCache`); a cached result whose files have since been removed or changed
is not reused (the key moves on to a new generation), so a retried flow run skips finished work
and a cleaned data directory is rebuilt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy

from tasks.context import Artefact

logger = logging.getLogger(__name__)


def _outputs_intact(result: Any) -> bool:
    return result.problem() is None if isinstance(result, Artefact) else True


@dataclass
class ArtefactCache(CachePolicy):
    """Cache key = ``key_fn(task parameters)`` (a digest of input digests, config sections and code
    version), plus a generation: a stored result whose artefacts are gone or changed is skipped,
    and the next free generation makes the task run again. ``key_fn`` returning None disables
    caching for that call."""

    key_fn: Callable[[dict[str, Any]], str | None] | None = None
    max_generations: int = 1000

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any):
        if self.key_fn is None:
            return None
        base = self.key_fn(inputs)
        if base is None:
            return None
        store = getattr(task_ctx, "result_store", None)
        name = task_ctx.task.name if task_ctx is not None else "task"
        for generation in range(self.max_generations):
            key = f"sent-{name}-{base[:40]}-g{generation}"
            if store is None or not store.exists(key):
                return key
            try:
                result = store.read(key).result
            except Exception:  # unreadable record (another Prefect version, a torn write): skip it
                continue
            if _outputs_intact(result):
                return key
            logger.info("cached %s result under %s points at missing or changed files; recomputing", name, key)
        return None


def cache_on(key_fn: Callable[[dict[str, Any]], str | None]) -> ArtefactCache:
    return ArtefactCache(key_fn=key_fn)
