"""Build hook: copy the top-level grammars/ into the fuzzylogic package and
the example rule files into fuzzylogic_seg.

The grammar and the rule files live at the top of the repository (one place
to edit them: grammars/, examples/rules/); a built wheel carries copies as
package data (fuzzylogic/_grammars/, fuzzylogic_seg/_rules/), so an installed
package finds them from any working directory (see fuzzylogic/grammar.py and
fuzzylogic_seg/finetune.py's rules_dir).
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
        src = Path(__file__).parent / "examples" / "rules"
        dst = Path(self.build_lib) / "fuzzylogic_seg" / "_rules"
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.rules"):
            shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildPyWithGrammars})
