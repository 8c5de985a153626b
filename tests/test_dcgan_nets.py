import pytest
import torch

from dcgan.nets import Discriminator, Generator


@pytest.mark.parametrize("num_layers", [5, 6])
def test_generator_and_discriminator_shapes(num_layers):
    g = Generator(num_layers=num_layers, width_multiplier=0.125)
    d = Discriminator(width_multiplier=0.125)
    images = g(torch.randn(3, 128))
    assert images.shape == (3, 3, 64, 64)
    assert images.abs().max() <= 1.0  # tanh output
    assert d(images).shape == (3,)


def test_layer_counts_follow_the_paper():
    convs = lambda m: [x for x in m.modules() if isinstance(x, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))]  # noqa: E731
    five, six = Generator(num_layers=5), Generator(num_layers=6)
    # the paper counts the dense projection as a layer: 1 + 4 convs = 5, 1 + 5 convs = 6
    assert len(convs(five)) == 4 and len(convs(six)) == 5
    assert [c.out_channels for c in convs(five)] == [512, 256, 128, 3]
    assert [c.out_channels for c in convs(six)] == [512, 256, 128, 64, 3]
    assert convs(six)[-1].stride == (1, 1) and convs(six)[-1].kernel_size == (4, 4)
    assert [c.out_channels for c in convs(Discriminator())] == [32, 64, 128, 256, 512]


def test_full_width_parameter_counts_match_the_paper_code():
    # ENVIRONMENT-NOTES: the paper's nets have G ≈ 19.5M and D ≈ 4.4M parameters
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 19.0e6 < count(Generator(num_layers=6)) < 20.0e6
    assert 4.3e6 < count(Discriminator()) < 4.45e6


def test_impossible_layer_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_layers=4"):
        Generator(num_layers=4)


def _init_statistics(model) -> dict[str, float]:
    """Std of conv/linear weights, |bias| max, BatchNorm scale mean/std and |shift| max over both nets."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    biases = torch.cat([m.bias.detach() for m in layers if m.bias is not None])
    scales = torch.cat([m.weight.detach() for m in bns])
    return {
        "weight_std": weights.std().item(),
        "bias_max": biases.abs().max().item(),
        "bn_scale_mean": scales.mean().item(),
        "bn_scale_std": scales.std().item(),
        "bn_shift_max": torch.cat([m.bias.detach() for m in bns]).abs().max().item(),
    }


def test_normal_init_is_applied_by_the_module_to_both_nets():
    """DCGAN's init (Radford et al. 2016, §4): conv/linear weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases
    0. PyTorch's defaults differ in each point (Kaiming-uniform weights and biases, BatchNorm scale exactly 1), so
    every figure below fails when `weight_init: normal_0.02` is not applied."""
    from dcgan.module import DCGAN

    nets = {"generator": {"num_layers": 6, "width_multiplier": 0.25}, "discriminator": {"width_multiplier": 0.25}}
    torch.manual_seed(0)
    stats = _init_statistics(DCGAN(**nets, weight_init="normal_0.02"))
    assert stats["weight_std"] == pytest.approx(0.02, rel=0.01)  # 1.9M weights: the sample std is within 0.1%
    assert stats["bias_max"] == 0.0 and stats["bn_shift_max"] == 0.0
    assert stats["bn_scale_mean"] == pytest.approx(1.0, abs=0.003)  # 744 scales: the mean's standard error is 0.0007
    assert stats["bn_scale_std"] == pytest.approx(0.02, rel=0.1)  # and the std's 2.6%

    torch.manual_seed(0)
    default = _init_statistics(DCGAN(**nets, weight_init="default"))
    assert default["bn_scale_std"] == 0.0 and default["bn_scale_mean"] == 1.0  # PyTorch's BatchNorm: scale 1
    assert default["bias_max"] > 0.001 and default["weight_std"] != pytest.approx(0.02, rel=0.1)
