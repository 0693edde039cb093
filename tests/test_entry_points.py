"""The user commands: gatedconv.cli's modules, the console scripts in setup.cfg, ``python -m gatedconv`` and the
thin files in scripts/ and benchmarks/ agree with each other."""
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatedconv.cli import COMMANDS, SCRIPTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_main_and_help(name, capsys, monkeypatch):
    module_name = COMMANDS[name][0]
    if not module_name.startswith("gatedconv.cli.") and importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not in this checkout")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "main", None)), f"{module_name} has no main()"
    if module_name.startswith("gatedconv.cli."):
        parser = module.build_parser()
        assert parser.format_usage().startswith("usage:")
    monkeypatch.setattr(sys, "argv", [name])
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_python_m_gatedconv_lists_the_commands():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "gatedconv"], capture_output=True, text=True, timeout=120, env=env,
                       cwd=ROOT / "tests")
    assert p.returncode == 0, p.stderr
    for name, (_, description) in COMMANDS.items():
        assert name in p.stdout and description in p.stdout
    for script in SCRIPTS.values():
        assert f"python {script}" in p.stdout


def test_python_m_gatedconv_dispatches(capsys, monkeypatch):
    from gatedconv.__main__ import main

    monkeypatch.setattr(sys, "argv", ["__main__.py"])
    with pytest.raises(SystemExit) as exc:
        main(["plot-runs", "--help"])
    assert exc.value.code in (0, None)
    assert capsys.readouterr().out.startswith("usage: gatedconv-plot-runs")
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'nope'") and len(err.strip().splitlines()) == 1


def test_scripts_and_benchmarks_do_not_edit_sys_path():
    files = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    assert files
    offenders = [str(f.relative_to(ROOT)) for f in files if "sys.path" in f.read_text()]
    assert not offenders, f"these files edit sys.path (the package is installed): {offenders}"


def test_scripts_are_thin_wrappers_of_the_commands():
    for name, script in SCRIPTS.items():
        text = (ROOT / script).read_text()
        assert f"from {COMMANDS[name][0]} import main" in text, script


def test_setup_cfg_console_scripts_match_commands():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (s.strip() for s in line.split("="))
        entries[name] = target
    assert entries == {name: f"{module}:main" for name, (module, _) in COMMANDS.items()}
