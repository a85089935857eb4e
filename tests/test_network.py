"""Tests for noise2average.network (MU-Net)."""

import pytest
import torch

from noise2average.network import MUNet, count_flops, count_parameters


def _paper_parameter_count(in_channels=1, out_channels=1, width=64, stages=9):
    """Parameters of the start code's munet_3d_model, counted layer by layer."""
    conv = lambda cin, cout: 27 * cin * cout + cout  # noqa: E731  (3x3x3 kernel + bias)
    encoder = stages // 2 + 1
    total = conv(in_channels, width) + conv(width, width)             # stage 1
    total += (encoder - 1) * 2 * conv(width, width)                   # stages 2..5
    total += (stages - encoder) * (conv(2 * width, width) + conv(width, width))  # 6..9
    return total + conv(width, out_channels)                          # residual conv


def test_output_shape_single_and_multichannel():
    torch.manual_seed(0)
    net = MUNet(depth=6, width=4)
    x = torch.randn(2, 1, 9, 10, 11)
    assert net(x).shape == x.shape
    assert net.residual(x).shape == x.shape
    dwi = MUNet(7, 7, depth=10, width=4, batch_norm=True)
    x = torch.randn(2, 7, 8, 8, 8)
    assert dwi(x).shape == (2, 7, 8, 8, 8)
    other = MUNet(2, 1, depth=6, width=4)
    assert other(torch.randn(1, 2, 6, 6, 6)).shape == (1, 1, 6, 6, 6)


def test_zero_output_conv_gives_identity():
    torch.manual_seed(1)
    net = MUNet(depth=10, width=4)
    with torch.no_grad():
        net.output.weight.zero_()
        net.output.bias.zero_()
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.equal(net(x), x)
    # and a nonzero output bias shifts the output by exactly that residual
    with torch.no_grad():
        net.output.bias.fill_(0.25)
    torch.testing.assert_close(net(x), x + 0.25)


def test_paper_preset_parameter_count():
    net = MUNet()  # depth 18, width 64: the start code's T1w network
    assert net.config == {"in_channels": 1, "out_channels": 1, "depth": 18, "width": 64,
                          "batch_norm": False}
    assert count_parameters(net) == _paper_parameter_count() == 2_327_041
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 19  # 18 hidden ReLU convolutions + the residual convolution
    # decoder stages read [conv_{10-s}, conv_{s-1}]: 128 input channels
    assert [c.in_channels for c in convs] == [1] + [64] * 9 + [128, 64] * 4 + [64]


def test_skip_connections_follow_start_code():
    """Stage 6 of the paper network reads cat[conv4, conv5], ..., stage 9 cat[conv1, conv8]."""
    torch.manual_seed(2)
    net = MUNet(depth=18, width=2)
    seen = {}

    def hook(index):
        def record(module, inputs, output):
            seen[index] = (inputs[0].detach(), output.detach())
        return record

    for index, stage in enumerate(net.stages, start=1):
        stage.register_forward_hook(hook(index))
    net(torch.randn(1, 1, 5, 5, 5))
    for stage, mirror in ((6, 4), (7, 3), (8, 2), (9, 1)):
        expected = torch.cat([seen[mirror][1], seen[stage - 1][1]], dim=1)
        assert torch.equal(seen[stage][0], expected)


@pytest.mark.parametrize("depth", [0, 4, 5, 8, 12, 18.0, True, "18"])
def test_invalid_depth_raises(depth):
    with pytest.raises(ValueError, match="depth"):
        MUNet(depth=depth, width=4)


@pytest.mark.parametrize("name", ["in_channels", "out_channels", "width"])
def test_invalid_channels_raise(name):
    kwargs = {"in_channels": 1, "out_channels": 1, "depth": 6, "width": 4, name: 0}
    in_channels = kwargs.pop("in_channels")
    out_channels = kwargs.pop("out_channels")
    with pytest.raises(ValueError, match=name):
        MUNet(in_channels, out_channels, **kwargs)


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match="expected input"):
        MUNet(depth=6, width=4)(torch.zeros(1, 2, 4, 4, 4))


def test_he_initialisation():
    torch.manual_seed(3)
    net = MUNet(depth=10, width=32)
    conv = net.stages[1][0]  # 32 -> 32, fan_in 864
    std = conv.weight.std().item()
    assert abs(std - (2.0 / (27 * 32)) ** 0.5) < 0.05 * (2.0 / (27 * 32)) ** 0.5
    assert torch.count_nonzero(conv.bias) == 0


def test_count_flops():
    net = MUNet(depth=6, width=4)
    # stage1: 1->4, 4->4; stage2: 4->4, 4->4; stage3: 8->4, 4->4; out 4->1; per voxel MACs x 27
    macs_per_voxel = 27 * (1 * 4 + 4 * 4 + 4 * 4 + 4 * 4 + 8 * 4 + 4 * 4 + 4 * 1)
    assert count_flops(net, 8) == 2 * macs_per_voxel * 8 ** 3
    assert count_flops(net, (8, 6, 4)) == 2 * macs_per_voxel * 8 * 6 * 4
    paper_macs_per_voxel = 27 * (1 * 64 + 13 * 64 * 64 + 4 * 128 * 64 + 64 * 1)
    assert count_flops(MUNet(), 80) == 2 * paper_macs_per_voxel * 80 ** 3  # ~2.38 TFLOP
    with pytest.raises(ValueError, match="block_shape"):
        count_flops(net, (8, 8))
