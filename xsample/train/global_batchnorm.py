"""Batch norm over the global batch for CPU process groups.

torch's SyncBatchNorm runs on GPU only. Contrastive methods normalise over the whole batch (SimCLR
uses global BN), and without it a world-size-2 CPU run would not reproduce the single-process run.
Statistics are summed across ranks with a differentiable all_reduce, so gradients match too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum across ranks; the gradient of a sum is the summed gradient (every rank used the total)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        reduce_dims = [0, *range(2, x.dim())]
        stats = torch.cat([x.sum(reduce_dims), (x * x).sum(reduce_dims)]).double()
        stats = _AllReduceSum.apply(stats)
        # Every rank holds as many values per channel (equal local batches): the count needs no collective.
        total = x.numel() / x.shape[1] * dist.get_world_size()
        mean, mean_sq = stats.chunk(2)
        mean, var = mean / total, mean_sq / total - (mean / total) ** 2
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
            unbiased = var * total / max(total - 1, 1)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean, var = mean.to(x.dtype).view(shape), var.to(x.dtype).view(shape)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_batchnorm_for_distributed(module: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm on GPU; GlobalBatchNorm elsewhere. Call only when the world size is > 1."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm_for_distributed(child, device))
    return module
