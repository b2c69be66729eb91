"""The README stays true: every config key, command and set-up step it promises exists."""

import configparser
import re

from conftest import ROOT

from hepprune.core.config import describe


def test_readme_documents_every_config_key():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", readme, flags=re.M))
    keys = {key for key, _, _ in describe()}
    assert keys <= documented, f"undocumented config keys: {sorted(keys - documented)}"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for script in set(re.findall(r"python ((?:data|ptq|prune|rtl|slurm|bench)/\w+\.py)", readme)):
        assert (ROOT / script).is_file(), script
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_lists_every_console_command():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    commands = [line.split("=")[0].strip() for line in setup["options.entry_points"]["console_scripts"].splitlines()
                if line.strip()]
    readme = (ROOT / "README.md").read_text()
    assert commands and all(f"`{c}`" in readme for c in commands), [c for c in commands if f"`{c}`" not in readme]
