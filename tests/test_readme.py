"""README.md runs as written: every ```python block executes, verbatim, in a fresh namespace, in a directory
where the main-job command (trained here for one epoch on the tiny CIFAR-10) has written its run; and the
commands and the examples name the same run directory."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from gatedconv.cli.train import parse_args
from gatedconv.run import RunConfig, run_training

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
# A python block: an opening fence "```python" at the start of a line, up to the next closing fence.
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
# Any fence line that opens Python code, however it is spelled or indented.
PYTHON_FENCE = re.compile(r"^[ \t>]*(```|~~~)[ \t]*(python3?|py|pycon|ipython)\b", re.IGNORECASE | re.MULTILINE)


def _python_blocks() -> list:
    """(line number of the opening fence, code) of every python block of README.md."""
    return [(TEXT.count("\n", 0, m.start()) + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(TEXT)]


BLOCKS = _python_blocks()


def _exec_block(code: str, line: int) -> dict:
    """Run one README block as written, in a fresh namespace; return the namespace."""
    ns: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md:{line}", "exec"), ns)  # noqa: S102  (the README's own code)
    return ns


def _block_containing(text: str) -> tuple:
    hits = [(line, code) for line, code in BLOCKS if text in code]
    assert len(hits) == 1, f"expected one README python block containing {text!r}, found {len(hits)}"
    return hits[0]


def _trainf_args(section_pattern: str) -> list:
    """The arguments of `python scripts/trainf.py ...` in the first bash block after `section_pattern`."""
    block = re.search(section_pattern + r".*?^```bash\n(.*?)^```", TEXT, re.DOTALL | re.MULTILINE)
    assert block, f"README has no bash block after {section_pattern!r}"
    commands = [shlex.split(part) for line in block.group(1).splitlines() for part in line.split("&&")]
    train = [c for c in commands if c[:2] == ["python", "scripts/trainf.py"]]
    assert len(train) == 1, f"expected one scripts/trainf.py command after {section_pattern!r}, got {train}"
    return train[0][2:]


def _main_job_args() -> list:
    return _trainf_args(r"^\*\*Main job\*\*")


@pytest.fixture(scope="module")
def readme_cwd(tmp_path_factory, tiny_cifar) -> Path:
    """A fresh working directory in which the README's main-job command has run: its own flags (output
    directory, seed, model, recipe) with only the data, the length and the speed knobs swapped for the tiny
    CIFAR-10, trained by the package's training function, from that directory (so relative paths resolve as
    they would for a user)."""
    cwd = tmp_path_factory.mktemp("readme_cwd")
    args = parse_args(_main_job_args())
    fields = {k: v for k, v in vars(args).items() if k not in ("resume", "model_kwargs", "cross_validate")}
    fields.update(data_dir=str(tiny_cifar), epochs=1, batch_size=200, eval_batch_size=100, precision="fp32",
                  compile="off")
    cfg = RunConfig(**fields, model_kwargs=json.loads(args.model_kwargs))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        run_training(cfg, print_fn=lambda *a, **k: None)
    return cwd


def test_every_python_fence_of_the_readme_is_collected():
    """The block finder sees every Python code block (no `py`, indented or unclosed fence escapes the run
    below), and the README has the three examples this file relies on."""
    assert len(PYTHON_FENCE.findall(TEXT)) == len(BLOCKS) >= 3


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs_verbatim(line, code, readme_cwd, monkeypatch):
    """Each README python block runs as pasted into a fresh interpreter (an undefined name fails it), in a
    directory holding the main job's run."""
    monkeypatch.chdir(readme_cwd)
    _exec_block(code, line)


def test_own_model_snippet_trains():
    """The "use the block in your own model" example (marked `snippet:own-model`) lowers its loss in five
    steps and returns one gate weight per path."""
    block = re.search(r"<!-- snippet:own-model[^>]*-->\s*```python\n(.*?)```", TEXT, re.DOTALL)
    assert block, "README lost its own-model snippet"
    line = TEXT.count("\n", 0, block.start(1)) + 1
    torch.manual_seed(0)
    ns = _exec_block(block.group(1), line)
    assert ns["loss_after"] < ns["loss_before"]
    assert ns["gates"].shape == (8, 3)


def test_load_model_example_reads_the_main_jobs_run(readme_cwd, monkeypatch):
    """The `load_model` example loads the directory the main-job command writes and turns its images into
    one row of 10 logits per image."""
    out = parse_args(_main_job_args()).out
    assert out is not None, "the main job must name its run directory (--output)"
    line, code = _block_containing("load_model(")
    assert re.findall(r"load_model\(\s*[\"']([^\"']+)[\"']", code) == [out]
    monkeypatch.chdir(readme_cwd)
    ns = _exec_block(code, line)
    images, logits = ns["images"], ns["logits"]
    assert logits.shape == (images.shape[0], 10) and torch.isfinite(logits).all()


def test_training_section_trains_the_main_jobs_run():
    """The Training section's command and the main-job command at the top write the same run directory."""
    main = parse_args(_main_job_args())
    training = parse_args(_trainf_args(r"^## Training$"))
    assert main.out is not None and training.out == main.out


def test_impl_row_says_which_forms_need_after_sum():
    """The `impl` row of the block's argument table lists every form; the ones it says need
    `activation="after_sum"` refuse the default activation, and the others build with either activation."""
    from gatedconv import GatedConv2d
    from gatedconv.layers import ACTIVATION_PLACEMENTS, IMPLEMENTATIONS

    row = re.search(r"^\| `impl` \| `\"auto\"` \|(.*)$", TEXT, re.MULTILINE)
    assert row, "README lost the impl row of the block's argument table"
    groups = re.search(r"(.*?)\(either `activation`\);(.*?)\(only with `activation=\"after_sum\"`", row.group(1))
    assert groups, "the impl row must say which forms take either activation and which need after_sum"
    either, after_sum = groups.groups()
    either, after_sum = re.findall(r'`"(\w+)"`', either), re.findall(r'`"(\w+)"`', after_sum)
    assert sorted(["auto", *either, *after_sum]) == sorted(IMPLEMENTATIONS)
    for impl in either:
        for activation in ACTIVATION_PLACEMENTS:
            GatedConv2d(3, 4, impl=impl, activation=activation)
    for impl in after_sum:
        with pytest.raises(ValueError, match="needs activation='after_sum'"):
            GatedConv2d(3, 4, impl=impl)
        GatedConv2d(3, 4, impl=impl, activation="after_sum")
