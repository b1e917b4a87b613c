"""`fuzzylogic` stands alone: importing it pulls in none of the segmentation stack."""
import subprocess
import sys

HEAVY = ("torchvision", "segment_anything", "segmentation_models_pytorch", "timm", "PIL", "fuzzylogic_seg")


def test_import_fuzzylogic_does_not_import_the_segmentation_stack():
    code = (
        "import sys, fuzzylogic\n"
        "fuzzylogic.compile('sort s\\npredicate a(s)\\nrule r: forall x: a(x)')\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"fuzzylogic imported {out.stdout.strip()}"
