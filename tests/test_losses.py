"""Losses: the Lovász hinge is the IoU loss it claims to be, and bad names are refused."""

from __future__ import annotations

import pytest
import torch

from segmentation import iou_score, lovasz_hinge_loss, segmentation_loss


def _masks(seed: int, n: int = 3, size: int = 12):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, 1, size, size, generator=generator) > 0.6).float()
    pred = (torch.rand(n, 1, size, size, generator=generator) > 0.5).float()
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_hinge_at_hard_logits_is_twice_the_iou_loss(seed):
    # At logits of +-1 every pixel's hinge error is 0 (right) or 2 (wrong), and the Lovász
    # extension equals the set function there: the loss is 2 * (1 - IoU), image by image.
    pred, target = _masks(seed)
    loss = lovasz_hinge_loss(pred * 2 - 1, target)
    expected = torch.tensor([2 * (1 - iou_score(p.numpy() > 0, t.numpy() > 0))
                             for p, t in zip(pred, target)]).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_lovasz_hinge_is_zero_when_confidently_right_and_has_gradients():
    _, target = _masks(3)
    assert lovasz_hinge_loss(target * 4 - 2, target).item() == 0.0
    logits = torch.zeros_like(target, requires_grad=True)
    lovasz_hinge_loss(logits, target).backward()
    # Raising a foreground logit lowers the loss; raising a background logit raises it.
    assert (logits.grad[target > 0] <= 0).all() and (logits.grad[target == 0] >= 0).all()
    assert logits.grad.abs().sum() > 0


def test_unknown_loss_is_refused_by_name():
    pred, target = _masks(4)
    with pytest.raises(ValueError, match="'dice'"):
        segmentation_loss(pred, target, "dice")
