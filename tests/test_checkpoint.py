"""The resume file's format (`train/checkpoint.py`): what is written is what is read, tensors and JSON only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from gmdf_cli.train.checkpoint import ResumeState, load_resume, save_resume


def _state() -> ResumeState:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return ResumeState(
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler={k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        planner={"generator": torch.Generator().manual_seed(5).get_state(), "sampler": {"order": [2, 0, 1]}},
        torch_rng=torch.get_rng_state(),
        python_random=random.Random(3).getstate(),
        grad_scaler={},
        step=7,
        best=0.625,
        per_domain=4,
        per_test=8,
        world_size=2,
        history=[{"epoch": 1, "step": 7, "loss": 0.5}],
        request={"domains": ["ff", "dfdc"], "seed": 3},
    )


def test_a_resume_state_reads_back_as_written(tmp_path: Path) -> None:
    state = _state()
    save_resume(tmp_path / "resume.safetensors", state)
    back = load_resume(tmp_path / "resume.safetensors")
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items())
    assert back.optimizer["param_groups"] == json.loads(json.dumps(state.optimizer["param_groups"]))  # betas: a list
    for idx, params in state.optimizer["state"].items():
        assert all(torch.equal(back.optimizer["state"][idx][k], v) for k, v in params.items())
    assert torch.equal(back.planner["generator"], state.planner["generator"])
    assert torch.equal(back.torch_rng, state.torch_rng)
    assert back.python_random == state.python_random  # random.setstate takes it as it is
    fields = ("scheduler", "grad_scaler", "step", "best", "per_domain", "per_test", "world_size", "history", "request")
    assert {f: getattr(back, f) for f in fields} == {f: getattr(state, f) for f in fields}
    assert back.planner["sampler"] == state.planner["sampler"]
