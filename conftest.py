"""The repository root is ComfyUI's node pack (its __init__.py imports ./nodes relatively), not a
test package: pytest collects it as a plain folder, so that how the root imports never depends on
what the clone's folder is called (`alis-panoramas` is no Python name)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


class _RootAsPlainFolder:
    # A conftest's hooks see only paths below it, and pytest asks about a folder with the hooks of
    # its parent: the root's own collector is chosen by a plugin registered from here.
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path == ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_terminal_summary(terminalreporter, config):
    # pytest-randomly prints its seed in the header, which -q (the README's command) hides
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} (--randomly-seed={seed} repeats it)")


def pytest_configure(config):
    config.pluginmanager.register(_RootAsPlainFolder(), "alis-root-as-plain-folder")
