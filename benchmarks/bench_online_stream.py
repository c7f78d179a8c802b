"""What ``curriculum.mode: online`` costs on verl (`sent.online_record`, `sent.online_stream`):

1. in verl's reward workers: our `compute_score` with a row's place in ``extra_info`` (grading
   plus one appended line) against grading alone, per response, interleaved;
2. in verl's trainer, once a step: taking one step of B prompts x G responses in (reading the new
   lines, clustering each group with curation's judge, the order's bookkeeping, rewriting the
   history Parquet), against the step's grading (B x G responses) as a yardstick;
3. on resume: replaying the record of S steps, which a resumed job pays once.

Responses are bench_semantic's MATH-like mix (spellings of one answer, slips, no answer), new at
every step, so that the graders' caches help as little as they would in training.
Run alone on this machine: a second process doubles every figure.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import interleaved_ratio
from bench_semantic import make_problem

from sent import online_record
from sent.grading import compute_score as grade_only
from sent.online_stream import OnlineStream, StreamSettings
from sent.rewards import compute_score

B, G, ROWS, STEPS = 64, 8, 256, 20


def settings(tmp: Path) -> StreamSettings:
    return StreamSettings(
        record=str(tmp / "record.jsonl"),
        history=str(tmp / "online_se.parquet"),
        rows=str(tmp / "rows.json"),
        checkpoints=str(tmp / "checkpoints"),
        batch_size=B,
        group_size=G,
        seed=0,
        shuffle=True,
        filter_zero=False,
    )


def main() -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        s = settings(tmp)
        stream = OnlineStream(s, [rng.random() for _ in range(ROWS)], [f"p{i}" for i in range(ROWS)])

        # 1. the reward function, per response
        sample = make_problem(rng)[0]
        info = {"id": "p0", online_record.KEY: online_record.place(0, 0, 1, tmp / "scratch.jsonl")}
        base, cand, ratio = interleaved_ratio(
            lambda: grade_only(None, sample, "7"), lambda: compute_score(None, sample, "7", dict(info))
        )
        print(
            f"reward function: grading {base * 1e3:.3f} ms/response, with the record {cand * 1e3:.3f} ms ({ratio:.2f}x)"
        )

        # 2. live steps: grade B x G responses, then take the step in at the next step's first place
        grade_s, take_s = [], []
        for step in range(STEPS):
            grading = 0.0
            for k in range(B):
                position = step * B + k
                row, epoch = stream.row_at(position)
                place = {"id": f"p{row}", online_record.KEY: online_record.place(position, row, epoch, s.record)}
                responses = make_problem(rng)  # this step's G responses to the row
                t0 = time.perf_counter()
                for response in responses:
                    compute_score(None, response, "7", dict(place))
                grading += time.perf_counter() - t0
            t1 = time.perf_counter()
            stream.take_in()
            grade_s.append(grading)
            take_s.append(time.perf_counter() - t1)
        per_grade, per_take = sum(grade_s) / STEPS, sum(take_s) / STEPS
        size_mb = Path(s.record).stat().st_size / 1e6
        print(
            f"a step of {B} prompts x {G}: grading {per_grade:.3f} s, taking it in {per_take:.3f} s "
            f"({per_take / per_grade:.2f}x the step's grading; the record is {size_mb:.1f} MB)"
        )

        # 3. a resume after STEPS steps replays the whole record
        t0 = time.perf_counter()
        again = OnlineStream(s, stream.offline_se, stream.ids)
        again.resume(STEPS)
        replay = time.perf_counter() - t0
        assert again.order.history == stream.order.history
        print(f"resume after {STEPS} steps: replay {replay:.2f} s ({replay / STEPS:.3f} s a step)")


if __name__ == "__main__":
    main()
