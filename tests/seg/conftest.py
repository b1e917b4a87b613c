import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on 2 shared cores, oversubscribed torch
    threads make the SAM tests about 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def varied_sam():
    """Factory: ``varied_sam(config, seed=0)`` builds an embedded SAM of ``config``
    with every weight nudged by seeded noise (a random init gives near-constant
    masks; the nudge makes logits vary across pixels, so comparisons mean something)."""
    from fuzzylogic_seg.sam.build import build_embedded

    def make(config, seed=0):
        torch.manual_seed(seed)
        sam = build_embedded(config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in sam.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        return sam

    return make
