"""compat's recipe functions (sparse_conv2d, sparse_conv2d_unfold, sparse_conv2d_batch): the
taps in `indices` kept, the true convolution returned, their errors."""
import pytest
import torch
import torch.nn.functional as F

from torch_sparse_conv import compat


def _recipe_case(seed):
    torch.manual_seed(seed)
    x = torch.randn(3, 7, 7)
    filt = torch.zeros(5, 3, 3, 3)
    indices = torch.randint(0, 27, (4,))
    for i in range(5):
        filt[i].reshape(-1)[indices] = torch.rand(4)
    return x, filt, indices


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_compat_single_image(stride, padding):
    x, filt, indices = _recipe_case(8)
    expected = F.conv2d(x.unsqueeze(0), filt, None, stride, padding).squeeze(0)
    shape = tuple(expected.shape[-2:])
    for fn in (compat.sparse_conv2d, compat.sparse_conv2d_unfold):
        torch.testing.assert_close(fn(x, filt, indices, shape, stride=stride, padding=padding),
                                   expected, rtol=1e-5, atol=1e-5)


def test_compat_batch_and_index_masking():
    x, filt, indices = _recipe_case(9)
    xb = torch.stack([x, 2 * x, -x, x.flip(-1)])
    # Taps outside `indices` are ignored even when nonzero: the recipe keeps only `indices`.
    noisy = filt + (torch.rand_like(filt) < 0.2) * torch.randn_like(filt)
    mask = torch.zeros(27, dtype=torch.bool)
    mask[indices] = True
    expected = F.conv2d(xb, noisy * mask.view(1, 3, 3, 3))
    got = compat.sparse_conv2d_batch(xb, noisy, indices, (5, 5))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compat_errors():
    x, filt, indices = _recipe_case(10)
    with pytest.raises(ValueError, match="output_shape"):
        compat.sparse_conv2d(x, filt, indices, (6, 6))
    with pytest.raises(ValueError, match="indices"):
        compat.sparse_conv2d(x, filt, torch.tensor([27]), (5, 5))
    with pytest.raises(ValueError, match="3-D"):
        compat.sparse_conv2d(x.unsqueeze(0), filt, indices, (5, 5))
    with pytest.raises(ValueError, match="4-D"):
        compat.sparse_conv2d_batch(x, filt, indices, (5, 5))
