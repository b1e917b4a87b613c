"""Build hook: copy the top-level grammars/ into the fuzzylogic package.

The grammar lives at the top of the repository (one place to edit it); a
built wheel carries a copy as package data, so an installed fuzzylogic finds
it from any working directory (see fuzzylogic/grammar.py).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithGrammars(build_py):
    def run(self):
        super().run()
        src = Path(__file__).parent / "grammars"
        dst = Path(self.build_lib) / "fuzzylogic" / "_grammars"
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.lark"):
            shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildPyWithGrammars})
