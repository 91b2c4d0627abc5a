"""titlecat.models.layers: the compiled max-pooling of token bags (``_BagMax``).

(``test_layers.py`` is the package's import-layers contract, not this module's tests; the
masked pooling of padded grids is checked against the bag pooling in ``test_embedding.py``.)"""

import torch
import torch.nn.functional as F


def test_compiled_bag_max_matches_embedding_bag_on_random_bags():
    from titlecat.models.layers import _BagMax

    torch.manual_seed(0)
    vec = torch.randn(50, 7, requires_grad=True)
    lengths = torch.tensor([3, 1, 0, 5, 2])
    types = torch.randint(0, 50, (int(lengths.sum()),))
    offsets = lengths.cumsum(0) - lengths
    w = torch.randn(5, 7)
    ours = _BagMax.apply(vec, types, lengths)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), vec)
    theirs = F.embedding_bag(types, vec, offsets, mode="max")
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), vec)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)
    assert torch.all(ours[2] == 0)  # an empty bag is zeros and passes no gradient
