"""Where evaluation cells run: in this process (default) or as Ray actors (`--backend ray`).

A job is one attack with a chunk of steering settings. The driver writes each finished cell
into the run store itself, atomically, so both backends share the same resumable results.
Ray is an optional extra (`pip install 'steerlens[ray]'`); each actor loads the model once and
asks for one GPU when the device is CUDA, else one CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from steerlens.errors import SteerlensError


@dataclass
class Job:
    attack: str  # an attack name, or "benign"
    goals: list  # list[Behavior]
    settings: dict  # name -> Steering
    max_new_tokens: int
    batch_size: int
    system: str | None


def _run_job(model, job: Job) -> dict:
    from steerlens.attacks import get_attack
    from steerlens.evaluate import run_attack

    # "benign" cells are the JBB benign goals with no template (false-refusal rate).
    attack = get_attack("none" if job.attack == "benign" else job.attack)
    return run_attack(model, attack, job.goals, job.settings,
                      max_new_tokens=job.max_new_tokens, batch_size=job.batch_size,
                      system=job.system)


def run_local(model, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict]]:
    for job in jobs:
        yield job, _run_job(model, job)


class _Worker:
    """A Ray actor holding one model."""

    def __init__(self, model_name: str, device: str | None, dtype: str | None, threads: int):
        import torch

        from steerlens.models import load_model

        torch.set_num_threads(max(1, threads))
        torch.set_grad_enabled(False)
        self.model = load_model(model_name, device=device, dtype=dtype)

    def run(self, job: Job) -> dict:
        return _run_job(self.model, job)


def run_ray(jobs: list[Job], model_name: str, device: str | None, dtype: str | None,
            address: str | None = None, workers: int | None = None) -> Iterator[tuple[Job, dict]]:
    """Run jobs on a Ray cluster (`address`, or a local one), yielding results as they finish."""
    try:
        import ray
    except ImportError as e:
        raise SteerlensError("--backend ray needs Ray", fix="pip install 'steerlens[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpu = str(device or "").startswith("cuda")
    total = ray.cluster_resources().get("GPU" if gpu else "CPU", 1)
    n = int(workers or max(1, total))
    opts = {"num_gpus": 1} if gpu else {"num_cpus": 1}
    actor = ray.remote(**opts)(_Worker)
    pool = [actor.remote(model_name, device, dtype, 1) for _ in range(n)]
    pending = {}
    queue = list(jobs)
    for i, job in enumerate(queue[:n]):
        pending[pool[i].run.remote(job)] = (i, job)
    queue = queue[n:]
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        i, job = pending.pop(ref)
        result = ray.get(ref)
        if queue:
            nxt = queue.pop(0)
            pending[pool[i].run.remote(nxt)] = (i, nxt)
        yield job, result


Runner = Callable[[list[Job]], Iterator[tuple[Job, dict]]]
