import copy
import math

import pytest
import timm.optim
import torch

from xsample.train.optim import LARS, build_optimizer, cosine_schedule_with_warmup, param_groups


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _quadratic_grad(weight, curvature):
    """Gradient of 0.5 * sum(curvature * w^2), written by hand: curvature * w."""
    return [c * w for c, w in zip(curvature, weight, strict=True)]


def _norm(values):
    return math.sqrt(sum(v * v for v in values))


def test_lars_two_steps_match_hand_computation():
    curvature, lrs, momentum, decay, eta = [1.0, 2.0], [0.5, 0.2], 0.9, 0.1, 0.001
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    optimizer = LARS([weight], lr=lrs[0], momentum=momentum, weight_decay=decay, trust_coefficient=eta)
    expected, velocity = [3.0, 4.0], [0.0, 0.0]
    for lr in lrs:
        optimizer.param_groups[0]["lr"] = lr
        optimizer.zero_grad()
        (0.5 * (torch.tensor(curvature, dtype=torch.float64) * weight**2).sum()).backward()
        optimizer.step()
        # SimCLR's LARS: decay into the gradient, trust ratio from the norms, lr inside the momentum buffer.
        grad = [g + decay * w for g, w in zip(_quadratic_grad(expected, curvature), expected, strict=True)]
        local_lr = lr * eta * _norm(expected) / _norm(grad)
        velocity = [momentum * v + local_lr * g for v, g in zip(velocity, grad, strict=True)]
        expected = [w - v for w, v in zip(expected, velocity, strict=True)]
        assert weight.tolist() == pytest.approx(expected, rel=1e-12)


def test_lars_nesterov_step_matches_hand_computation():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    optimizer = LARS([weight], lr=2.0, momentum=0.5, trust_coefficient=0.01, nesterov=True)
    weight.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)  # norm 1, weight norm 5
    optimizer.step()
    local_lr = 2.0 * 0.01 * 5.0 / 1.0
    step = [0.5 * local_lr * g + local_lr * g for g in (0.6, 0.8)]
    assert weight.tolist() == pytest.approx([3.0 - step[0], 4.0 - step[1]], rel=1e-12)


def test_lars_zero_weight_uses_the_plain_learning_rate():
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = LARS([weight], lr=0.1, momentum=0.0)
    weight.grad = torch.ones(3)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((3,), -0.1))


def test_param_groups_exclude_biases_and_norm_parameters():
    model = _model()
    decayed, excluded = param_groups(model, weight_decay=0.1)
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3]), torch.Size([2, 4])]
    assert decayed["weight_decay"] == 0.1
    expected_excluded = {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    assert {id(p) for p in excluded["params"]} == expected_excluded
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]
    model[0].weight.requires_grad_(False)
    assert len(param_groups(model, 0.1)[0]["params"]) == 1, "frozen weights are left out"


def test_lars_excluded_parameters_get_plain_momentum_sgd():
    model = _model()
    optimizer = build_optimizer("lars", model, lr=0.5, weight_decay=0.1, momentum=0.9)
    bias, norm_scale, weight = model[0].bias, model[1].weight, model[0].weight
    before = {name: p.detach().clone() for name, p in (("bias", bias), ("scale", norm_scale), ("weight", weight))}
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
    # No trust ratio and no decay: velocity 0.5 then 0.9 * 0.5 + 0.5 per unit gradient.
    torch.testing.assert_close(bias.detach(), before["bias"] - 0.5 - 0.95)
    torch.testing.assert_close(norm_scale.detach(), before["scale"] - 0.5 - 0.95)
    assert not torch.allclose(weight.detach(), before["weight"] - 0.5 - 0.95), "weights are adapted"


def test_adamw_excluded_parameters_get_no_weight_decay():
    model = _model()
    optimizer = build_optimizer("adamw", model, lr=0.1, weight_decay=0.5)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
    bias, weight = model[0].bias.detach().clone(), model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model[0].bias.detach(), bias)
    torch.testing.assert_close(model[0].weight.detach(), weight * (1 - 0.1 * 0.5))


def test_adamw_is_fused_and_follows_the_per_tensor_updates():
    """The fused AdamW (a speed choice) takes the same steps as torch's per-tensor AdamW with the same groups."""
    torch.manual_seed(0)  # no BatchNorm: it leaves the bias before it a zero gradient, whose rounding Adam amplifies
    fused_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    reference_model = copy.deepcopy(fused_model)
    fused = build_optimizer("adamw", fused_model, lr=0.01, weight_decay=0.1)
    assert fused.defaults["fused"]
    reference = torch.optim.AdamW(param_groups(reference_model, 0.1), lr=0.01, weight_decay=0.1, betas=(0.9, 0.98),
                                  eps=1e-6, foreach=True)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        inputs = torch.randn(8, fused_model[0].in_features, generator=generator)
        for model, optimizer in ((fused_model, fused), (reference_model, reference)):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            optimizer.step()
    for fused_parameter, reference_parameter in zip(fused_model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(fused_parameter, reference_parameter, rtol=1e-5, atol=1e-6)


def test_build_optimizer_options_and_errors():
    model = _model()
    assert isinstance(build_optimizer("lars", model, 1.0, 1e-6, trust_coefficient=0.02), LARS)
    sgd = build_optimizer("sgd", model.parameters(), 0.1, 1e-4, momentum=0.5, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5 and sgd.defaults["nesterov"]
    adamw = build_optimizer("adamw", model, 1e-3, 0.1, betas=[0.8, 0.9], eps=1e-8)
    assert adamw.defaults["betas"] == (0.8, 0.9) and adamw.defaults["eps"] == 1e-8
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer("adagrad", model, lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match="takes no option.*betas"):
        build_optimizer("lars", model, lr=0.1, weight_decay=0.0, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="lr must be a finite positive"):
        build_optimizer("sgd", model, lr=0.0, weight_decay=0.0)


def _lrs(schedule_args, steps, base_lr=2.0):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedule = cosine_schedule_with_warmup(optimizer, *schedule_args)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_cosine_schedule_values():
    lrs = _lrs((10, 110), 115)
    assert lrs[0] == pytest.approx(0.2)  # (0 + 1) / 10 of the base lr: the first step trains
    assert lrs[9] == pytest.approx(2.0) and lrs[10] == pytest.approx(2.0)  # warmup end, cosine start
    assert lrs[60] == pytest.approx(1.0)  # halfway through the decay
    assert lrs[109] == pytest.approx(1.0 * (1 + math.cos(math.pi * 99 / 100)))
    assert lrs[110:] == pytest.approx([0.0] * 5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)), "monotone decay"


def test_cosine_schedule_final_fraction_and_no_warmup():
    lrs = _lrs((0, 100, 0.1), 102)
    assert lrs[0] == pytest.approx(2.0) and lrs[50] == pytest.approx(0.2 + 1.8 * 0.5)
    assert lrs[100] == pytest.approx(0.2) and lrs[101] == pytest.approx(0.2)
    assert _lrs((4, 4), 6) == pytest.approx([0.5, 1.0, 1.5, 2.0, 0.0, 0.0])


def test_cosine_schedule_rejects_bad_arguments():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_schedule_with_warmup(optimizer, 0, 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule_with_warmup(optimizer, 11, 10)
    with pytest.raises(ValueError, match="final_lr_fraction"):
        cosine_schedule_with_warmup(optimizer, 1, 10, final_lr_fraction=2.0)


@pytest.mark.parametrize("name", ["lars", "adamw", "sgd"])
def test_state_dict_round_trip_reproduces_the_next_steps_exactly(name):
    def fresh():
        model = _model()
        optimizer = build_optimizer(name, model, lr=0.3, weight_decay=1e-2)
        return model, optimizer, cosine_schedule_with_warmup(optimizer, 3, 10, final_lr_fraction=0.05)

    def run(resume_at):
        model, optimizer, schedule = fresh()
        data = torch.randn(10, 8, 3, generator=torch.Generator().manual_seed(1))
        for step in range(10):
            if step == resume_at:
                saved = {"m": model.state_dict(), "o": optimizer.state_dict(), "s": schedule.state_dict()}
                model, optimizer, schedule = fresh()
                model.load_state_dict(saved["m"])
                optimizer.load_state_dict(saved["o"])
                schedule.load_state_dict(saved["s"])
            optimizer.zero_grad()
            model(data[step]).pow(2).mean().backward()
            optimizer.step()
            schedule.step()
        return [p.detach().clone() for p in model.parameters()], optimizer.param_groups[0]["lr"]

    (uninterrupted, lr), (resumed, resumed_lr) = run(None), run(5)
    assert lr == resumed_lr
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed, strict=True))


def _lars_and_timm(model: torch.nn.Module, lr: float, weight_decay: float, nesterov: bool = False):
    """The harness LARS on ``model`` and timm's Lars on a copy, set up alike: timm adapts the weights' group
    (always_adapt, also without weight decay) and not the excluded one, with no eps in the trust ratio."""
    twin = copy.deepcopy(model)
    ours = build_optimizer("lars", model, lr=lr, weight_decay=weight_decay, momentum=0.9, nesterov=nesterov)
    decayed, excluded = param_groups(twin, weight_decay)
    theirs = timm.optim.Lars([{"params": decayed["params"], "weight_decay": weight_decay, "always_adapt": True},
                              {"params": excluded["params"], "weight_decay": 0.0, "always_adapt": False}],
                             lr=lr, momentum=0.9, trust_coeff=0.001, eps=0.0, nesterov=nesterov, foreach=False)
    return (model, ours), (twin, theirs)


def _step_both(pairs, lr: float, seed: int) -> None:
    """One optimiser step of each pair with the same seeded gradients at the same lr."""
    for model, optimizer in pairs:
        generator = torch.Generator().manual_seed(seed)
        for parameter in model.parameters():
            parameter.grad = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_equals_timm_lars_at_a_constant_lr_without_weight_decay(nesterov):
    pairs = _lars_and_timm(_model().double(), lr=0.5, weight_decay=0.0, nesterov=nesterov)
    for seed in range(5):
        _step_both(pairs, 0.5, seed)
    (ours, _), (theirs, _) = pairs
    for mine, timms in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, timms, rtol=1e-12, atol=1e-14)


def test_lars_differs_from_timm_lars_where_the_lr_changes():
    """SimCLR keeps each step's lr inside the momentum buffer; PyTorch SGD (timm) multiplies the whole buffer by
    the current lr. After steps at lr1 then lr2 the weights differ by momentum * (lr2 - lr1) * u1, u1 the first
    step's adapted gradient (trust ratio x gradient)."""
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False).double())
    model[0].weight = weight
    pairs = _lars_and_timm(model, lr=1.0, weight_decay=0.0)
    _step_both(pairs, 1.0, seed=0)
    first_gradient = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u1 = 0.001 * 5.0 / torch.linalg.vector_norm(first_gradient) * first_gradient  # ||w|| = 5 before step 1
    _step_both(pairs, 0.25, seed=1)
    (ours, _), (theirs, _) = pairs
    torch.testing.assert_close(ours[0].weight - theirs[0].weight, 0.9 * (0.25 - 1.0) * u1, rtol=1e-9, atol=1e-15)


def test_lars_differs_from_timm_lars_in_the_trust_ratio_under_weight_decay():
    """SimCLR: eta ||w|| / ||g + wd w||; timm (You et al., NVIDIA LARC): eta ||w|| / (||g|| + wd ||w||)."""
    weight, gradient, decay, lr = torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([1.0, -2.0],
                                                                                             dtype=torch.float64), 0.5, 1.0
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False).double())
    model[0].weight = torch.nn.Parameter(weight[None].clone())
    (ours, ours_optimizer), (theirs, timm_optimizer) = _lars_and_timm(model, lr=lr, weight_decay=decay)
    for net, optimizer in ((ours, ours_optimizer), (theirs, timm_optimizer)):
        net[0].weight.grad = gradient[None].clone()
        optimizer.step()
    decayed = gradient + decay * weight
    simclr = weight - lr * 0.001 * 5.0 / torch.linalg.vector_norm(decayed) * decayed
    you_et_al = weight - lr * 0.001 * 5.0 / (torch.linalg.vector_norm(gradient) + decay * 5.0) * decayed
    torch.testing.assert_close(ours[0].weight[0], simclr, rtol=1e-12, atol=0)
    torch.testing.assert_close(theirs[0].weight[0], you_et_al, rtol=1e-12, atol=0)
    assert not torch.allclose(simclr, you_et_al)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_foreach_update_is_bit_identical_to_the_per_tensor_loop(nesterov):
    """The multi-tensor update runs the same kernels per tensor: the tiny runs' numbers do not move with it."""
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                                    torch.nn.Linear(8 * 6 * 6, 5))
    multi_tensor = copy.deepcopy(reference)
    optimizers = [LARS(param_groups(model, 1e-4), lr=4.0, momentum=0.9, nesterov=nesterov, foreach=foreach)
                  for model, foreach in ((reference, False), (multi_tensor, True))]
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        # the second tensor's zero gradient takes the trust ratio's fallback
        grads = [torch.randn(p.shape, generator=generator) * (position != 1)
                 for position, p in enumerate(reference.parameters())]
        for model, optimizer in zip((reference, multi_tensor), optimizers, strict=True):
            for parameter, grad in zip(model.parameters(), grads, strict=True):
                parameter.grad = grad.clone()
            optimizer.step()
    for before, after in zip(reference.parameters(), multi_tensor.parameters(), strict=True):
        assert torch.equal(before, after)
