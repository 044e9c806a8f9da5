"""Where evaluation cells run: in this process (default) or as Ray actors (`--backend ray`).

A job is one attack's goals with a chunk of steering settings. The driver writes each finished
cell into the run store itself, atomically, so both backends share the same resumable results.
Ray is an optional extra (`pip install 'steerlens[ray]'`); each actor loads the model once and
asks for one GPU when the device is CUDA, else one CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from steerlens.errors import SteerlensError


@dataclass
class Job:
    attack: str  # an attack name, or "benign" (JBB benign goals, no template)
    goals: list  # list[JBBGoal]
    settings: list  # list[settings.Setting]
    judge: str
    max_new_tokens: int
    batch_size: int
    system: str | None
    readout: object | None  # generation.Readout


def run_job(model, job: Job, desc: str | None = None) -> dict[str, dict]:
    """Generate, judge and screen one job's cells (`desc`: label of a progress bar)."""
    from steerlens.audit.evaluate import attack_prompts, evaluate_job
    from steerlens.datasets.attacks import get_attack
    from steerlens.judges.registry import get_judge

    attack = get_attack("none" if job.attack == "benign" else job.attack)
    prompts = attack_prompts(model.tokenizer, attack, job.goals, job.system)
    return evaluate_job(model, prompts, job.goals, job.settings, get_judge(job.judge),
                    job.max_new_tokens, job.batch_size, job.readout, desc)


def run_local(model, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
    for i, job in enumerate(jobs):
        yield job, run_job(model, job, desc=f"job {i + 1}/{len(jobs)} ({job.attack})")


class _Worker:
    """A Ray actor holding one model."""

    def __init__(self, model_name: str, device: str, dtype: str, threads: int):
        import torch

        from steerlens.core.models import load_model

        torch.set_num_threads(max(1, threads))
        torch.set_grad_enabled(False)
        self.model = load_model(model_name, device=device, dtype=dtype)

    def run(self, job: Job) -> dict:
        return run_job(self.model, job)


def run_ray(jobs: list[Job], model_name: str, device: str, dtype: str,
            address: str | None = None, workers: int | None = None) -> Iterator[tuple[Job, dict]]:
    """Run jobs on a Ray cluster (`address`, or a local one), yielding results as they finish."""
    try:
        import ray
    except ImportError as e:
        raise SteerlensError("--backend ray needs Ray", fix="pip install 'steerlens[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpu = device.startswith("cuda")
    n = int(workers or max(1, ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    actor = ray.remote(**({"num_gpus": 1} if gpu else {"num_cpus": 1}))(_Worker)
    pool = [actor.remote(model_name, device, dtype, 1) for _ in range(n)]
    queue, pending = list(jobs), {}
    for i, job in enumerate(queue[:n]):
        pending[pool[i].run.remote(job)] = (i, job)
    queue = queue[n:]
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i, job = pending.pop(done[0])
        result = ray.get(done[0])
        if queue:
            nxt = queue.pop(0)
            pending[pool[i].run.remote(nxt)] = (i, nxt)
        yield job, result
