import pytest
import torch

from lightning_modules.dcgan_nets import Discriminator, Generator, init_normal_002


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


def test_normal_init_statistics():
    torch.manual_seed(0)
    g = Generator(num_layers=6, width_multiplier=0.25)
    g.apply(init_normal_002)
    weights = torch.cat(
        [m.weight.flatten() for m in g.modules() if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d))]
    )
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.03)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
