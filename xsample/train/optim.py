"""Optimisers (LARS for the SimCLR recipe, AdamW for CLIP's, plain SGD) and the warmup + cosine schedule.

LARS follows SimCLR's reference optimiser (its ``classic_momentum`` LARS), not PyTorch SGD's conventions as
``timm.optim.Lars`` does, because X-CLR's ImageNet recipe is SimCLR's and its learning rates and warmup were
tuned under SimCLR's update. The two agree exactly at a constant learning rate without weight decay (timm with
``always_adapt=True`` on the adapted group and ``eps=0``); they differ in two places (tests/test_optim.py pins
both):

- Where the learning rate sits. SimCLR puts it inside the momentum buffer (``v = m v + lr_t u_t``, ``w -= v``),
  so each step keeps the lr it was taken with; PyTorch SGD multiplies the whole buffer by the current lr
  (``v = m v + u_t``, ``w -= lr_t v``), so a schedule step rescales past momentum too. Under warmup and cosine
  decay the step-t updates therefore differ by ``sum_k m^(t-k) (lr_k - lr_t) u_k`` (``u_k``: step k's
  gradient times its trust ratio).
- The trust ratio under weight decay. SimCLR: ``eta ||w|| / ||g + wd w||``; timm (You et al. 2017, NVIDIA
  LARC): ``eta ||w|| / (||g|| + wd ||w||)``, which equals SimCLR's only when ``g`` is parallel to ``w``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from xsample.models import is_norm_or_bias

# Keyword options each optimiser accepts in build_optimizer, with the value used when the config omits one.
# AdamW's betas/eps follow CLIP's recipe (beta2 = 0.98, eps = 1e-6), not torch's defaults.
OPTIMIZER_OPTIONS: dict[str, dict[str, object]] = {
    "lars": {"momentum": 0.9, "trust_coefficient": 0.001, "nesterov": False},
    "adamw": {"betas": (0.9, 0.98), "eps": 1e-6},
    "sgd": {"momentum": 0.9, "nesterov": False},
}


def _check_positive(label: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{label} must be a finite positive number, got {value}")


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) exactly as SimCLR's reference optimiser:

        g = grad + weight_decay * w
        local_lr = lr * trust_coefficient * ||w|| / ||g||   (lr when either norm is 0)
        v = momentum * v + local_lr * g ;  w = w - v          (nesterov: w = w - (momentum * v + local_lr * g))

    The learning rate sits inside the momentum buffer, as in SimCLR. Parameter groups with
    ``lars_exclude=True`` (biases and norm parameters, see ``param_groups``) get plain momentum SGD:
    no weight decay and no trust ratio.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, nesterov: bool = False, foreach: bool = True):
        """``foreach``: each parameter group in a few multi-tensor calls (as torch's optimisers' ``foreach``),
        faster on the tiny model's ~40 small tensors, where one update is mostly per-call overhead. On the CPU
        it runs the per-tensor loop's kernels tensor by tensor, so it is bit-identical to it (``foreach=False``,
        the reference experiments/bench_optim.py and tests/test_optim.py compare against); on a GPU the fused
        norm kernel may round the trust ratio's norms differently in the last bit."""
        _check_positive("LARS lr", lr)
        _check_positive("LARS trust_coefficient", trust_coefficient)
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        nesterov=nesterov, lars_exclude=False)
        super().__init__(params, defaults)
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            buffers = []
            for param in params:
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                buffers.append(state["momentum_buffer"])
            # foreach takes one dtype and device per group (the per-tensor loop's norms keep each tensor's own)
            mixed = len({(param.dtype, param.device) for param in params}) > 1
            update = self._update_foreach if self.foreach and not mixed else self._update_per_tensor
            update(group, params, [param.grad for param in params], buffers)
        return loss

    @staticmethod
    def _update_per_tensor(group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                           buffers: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        for param, grad, buffer in zip(params, grads, buffers, strict=True):
            if group["lars_exclude"]:
                scaled = grad.mul(lr)
            else:
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                param_norm = torch.linalg.vector_norm(param)
                grad_norm = torch.linalg.vector_norm(grad)
                # torch.where instead of Python branching: no device-to-host sync per parameter.
                trust = torch.where((param_norm > 0) & (grad_norm > 0),
                                    group["trust_coefficient"] * param_norm / grad_norm,
                                    torch.ones_like(param_norm))
                scaled = grad.mul(trust * lr)
            buffer.mul_(momentum).add_(scaled)
            param.sub_(scaled.add(buffer, alpha=momentum) if group["nesterov"] else buffer)

    @staticmethod
    def _update_foreach(group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                        buffers: list[torch.Tensor]) -> None:
        """The per-tensor update's operations, each over the whole group (the same kernels per tensor)."""
        lr, momentum = group["lr"], group["momentum"]
        if group["lars_exclude"]:
            scaled = torch._foreach_mul(grads, lr)
        else:
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            param_norms = torch.stack(torch._foreach_norm(params))
            grad_norms = torch.stack(torch._foreach_norm(grads))
            trust = torch.where((param_norms > 0) & (grad_norms > 0),
                                group["trust_coefficient"] * param_norms / grad_norms,
                                torch.ones_like(param_norms))
            scaled = torch._foreach_mul(grads, list((trust * lr).unbind()))
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, scaled)
        torch._foreach_sub_(params, torch._foreach_add(scaled, buffers, alpha=momentum) if group["nesterov"] else buffers)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[decayed, excluded]: weights get ``weight_decay`` (and LARS adaptation); biases, norm parameters and
    scalars such as CLIP's logit scale get neither (``lars_exclude=True``), as in SimCLR and CLIP.
    Frozen parameters are left out."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decayed, excluded = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (excluded if is_norm_or_bias(name, parameter) else decayed).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": excluded, "weight_decay": 0.0, "lars_exclude": True}]


def build_optimizer(name: str, params_or_model: nn.Module | Iterable, lr: float, weight_decay: float,
                    **options) -> torch.optim.Optimizer:
    """``name`` in OPTIMIZER_OPTIONS; a model is split by ``param_groups``, parameters or groups are used as
    given. ``options`` override OPTIMIZER_OPTIONS[name] (momentum, trust_coefficient, nesterov, betas, eps)."""
    if name not in OPTIMIZER_OPTIONS:
        raise ValueError(f"unknown optimizer {name!r} (optim.name); choose one of {', '.join(OPTIMIZER_OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIMIZER_OPTIONS[name]))
    if unknown:
        raise ValueError(f"optimizer {name!r} takes no option(s) {unknown}; it accepts "
                         f"{sorted(OPTIMIZER_OPTIONS[name])}. Remove them from the optim config")
    settings = {**OPTIMIZER_OPTIONS[name], **options}
    _check_positive(f"{name} lr", lr)
    if isinstance(params_or_model, nn.Module):
        params = param_groups(params_or_model, weight_decay)
    else:
        params = list(params_or_model)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=float(settings["momentum"]),
                    trust_coefficient=float(settings["trust_coefficient"]), nesterov=bool(settings["nesterov"]))
    if name == "adamw":
        beta1, beta2 = (float(beta) for beta in settings["betas"])
        # Fused: one kernel over every parameter. The per-tensor path took a fifth of a tiny CLIP step on the CPU
        # (the text tower's 49408-token embedding is 6.3M of its 7.0M parameters; experiments/bench_optim.py, quiet
        # 2-core host: 141 -> 110 ms, 1.28x).
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(beta1, beta2),
                                 eps=float(settings["eps"]), fused=True)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=float(settings["momentum"]),
                           nesterov=bool(settings["nesterov"]))


def cosine_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                                final_lr_fraction: float = 0.0) -> LambdaLR:
    """Per-step LambdaLR: linear warmup (step + 1) / warmup_steps, so the first step already trains and step
    ``warmup_steps - 1`` reaches the base lr; then cosine decay from the base lr at step ``warmup_steps`` to
    ``final_lr_fraction`` x base lr at step ``total_steps``, held there afterwards. Call ``.step()`` after
    every optimiser step; its state_dict (step count, base lrs) is all a resumed run needs."""
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= int(warmup_steps) <= int(total_steps):
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0 <= final_lr_fraction <= 1:
        raise ValueError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction}")
    warmup_steps, total_steps = int(warmup_steps), int(total_steps)
    decay_steps = total_steps - warmup_steps

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps else 1.0
        return final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, lr_factor)
