"""The newcomer test: every `stepwise` command shown in README.md runs (with tiny overrides).

Commands are taken from README's ```bash blocks in order (backslash continuations joined); each
gets the overrides of TINY for its subcommand so the whole tour runs in minutes. A README command
whose subcommand has no entry here fails the test: new commands must be added to this table.
"""
import os
import re
import shlex
from pathlib import Path

import pytest

from _helpers import write_fashion_fixture

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "sample": ["--config.num_samples=200", "--config.batch_size=200", "--config.reference_samples=70"],
    "search": ["--config.search.generations=2", "--config.search.search_samples=64",
               "--config.search.batch_size=64", "--config.search.population=4", "--config.search.top_k=2",
               "--config.search.children=2", "--config.search.screen=8", "--config.search.predictor_warmup=4",
               "--config.search.predictor_train_steps=5", "--config.search.predictor_hidden=8",
               "--config.search.timesteps_only_generations=1", "--config.search.final_samples=128",
               "--config.search.final_top_baselines=2", "--config.search.final_reference=False",
               "--config.search.final_tuned_baselines=1"],
    "stitch": ["--config.model.components=3", "--config.stitch.num_samples=200", "--config.stitch.batch_size=200",
               "--config.stitch.points=3", "--config.stitch.search_samples=100", "--config.stitch.generations=1",
               "--config.stitch.population=4", "--config.stitch.children=2", "--config.stitch.cost_batch=32",
               "--config.stitch.tstitch_presets=2", "--config.stitch.resamples=20", "--config.stitch.model_only=False"],
    "train": ["--config.train.steps=4", "--config.train.batch_size=8", "--config.train.log_every=2",
              "--config.train.checkpoint_every=2", "--config.train.eval_examples=16",
              "--config.train.measure_cost=False"],
    "show-config": [], "evaluate": [], "report": [], "export": [], "stats": [],
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if "stepwise " in line and not line.startswith("python"):
                cmds.append(line[line.index("stepwise "):])  # e.g. after `pip install ... &&`
    return cmds


def test_readme_lists_commands():
    cmds = readme_commands()
    assert len(cmds) >= 8
    for sub in ("sample", "evaluate", "search", "report", "export", "show-config"):
        assert any(shlex.split(c)[1] == sub for c in cmds if len(shlex.split(c)) > 1), sub


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    """Each command runs through the installed entry point's function, in one process (programs of
    equal shapes compile once for the whole tour); `pip install -e . && stepwise sample` in a fresh
    environment is CI's own first step."""
    from stepwise.cli import main

    os.symlink(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for cmd in readme_commands():
        argv = shlex.split(cmd)[1:]
        sub = argv[0] if argv else "sample"
        assert sub in TINY, f"README command {cmd!r}: add tiny overrides for {sub!r} to TINY"
        extra = TINY[sub] if any(a.startswith("--config") for a in argv) or sub in ("sample",) else []
        if sub == "train":   # the smallest size each dataset loads (Fashion-MNIST: 28, unpadded)
            extra = extra + [f"--config.train.image_size={28 if 'fashion' in cmd else 8}"]
            if "fashion" in cmd:  # a tiny idx.gz set in the real format: no Debian package needed
                extra.append(f"--config.train.data_path={write_fashion_fixture(tmp_path / 'fashion')}")
        code = main([*(argv or ["sample"]), *extra])
        out = capsys.readouterr()
        assert code == 0, f"{cmd}\n{out.out[-2000:]}\n{out.err[-3000:]}"
