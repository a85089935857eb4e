"""MU-Net: the 3D residual U-Net without pooling used by Noise2Average.

The network follows the public Keras start code (github.com/birthlab/Noise2Average,
``Code/munet_res.py``): a plain stack of 3x3x3 convolutions with ReLU and He initialisation,
grouped into *stages* of two convolutions each, no pooling or upsampling (every feature map has
the block's full resolution), long concatenation skips that mirror the stages around the middle
one, and a final 3x3x3 convolution without activation that predicts the residual. The denoised
output is ``input + residual``.

Layer layout for ``depth = 2 * S`` hidden convolutions, ``S = 2 * K + 1`` stages (stage ``s`` is
two convolutions; its output is called ``conv_s`` as in the start code)::

    conv_1 = stage_1(input)                        in_channels -> width
    conv_s = stage_s(conv_{s-1})                   s = 2 .. K + 1 (encoder, width -> width)
    conv_s = stage_s(cat[conv_{S+1-s}, conv_{s-1}])
                                                   s = K + 2 .. S (decoder, 2 width -> width)
    residual = output_conv(conv_S)                 width -> out_channels, no activation

The paper preset ``depth=18`` (``S = 9``, ``K = 4``) gives exactly the start code: the decoder
stages 6, 7, 8, 9 read ``cat[conv4, conv5]``, ``cat[conv3, conv6]``, ``cat[conv2, conv7]`` and
``cat[conv1, conv8]``. ``depth=10`` gives 5 stages with skips ``cat[conv2, conv3]`` and
``cat[conv1, conv4]``. Supported depths are therefore 6, 10, 14, 18, 22, ... (``depth % 4 == 2``).

``depth`` counts the hidden (ReLU) convolutions; the output convolution comes on top, so the
network has ``depth + 1`` convolution layers in all (19 for the paper's "18-layer" MU-Net, as in
the start code and the paper's own count).
"""

import torch
from torch import nn

__all__ = ["MUNet", "count_flops", "count_parameters"]


def _check_architecture(in_channels, out_channels, depth, width):
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 6 or depth % 4 != 2:
        raise ValueError(
            f"depth must be an integer >= 6 with depth % 4 == 2 (6, 10, 14, 18, ...: two "
            f"convolutions per stage and an odd number of stages), got {depth!r}"
        )


class _Stage(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by (optional batch norm and) ReLU."""

    def __init__(self, in_channels, width, *, batch_norm, first_batch_norm):
        layers = []
        for index, channels in enumerate((in_channels, width)):
            use_bn = batch_norm and (index > 0 or first_batch_norm)
            layers.append(nn.Conv3d(channels, width, 3, padding=1, bias=True))
            if use_bn:
                layers.append(nn.BatchNorm3d(width))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MUNet(nn.Module):
    """3D MU-Net that predicts a residual and returns ``input + residual``.

    Parameters
    ----------
    in_channels : int, optional
        Channels of the input block (1 for a T1w volume, ``1 + n_dwi`` for DWI).
    out_channels : int, optional
        Channels of the predicted residual. When equal to ``in_channels`` (the usual case),
        ``forward`` returns ``input + residual``; otherwise it returns the residual alone.
    depth : int, optional
        Number of hidden 3x3x3 convolutions (each followed by ReLU), excluding the output
        convolution. Must be 6, 10, 14, 18, ... (``depth % 4 == 2``); see the module docstring
        for the skip pattern. 18 is the paper's T1w network.
    width : int, optional
        Feature channels of every hidden convolution (64 in the paper's T1w network).
    batch_norm : bool, optional
        Insert ``BatchNorm3d`` between each hidden convolution and its ReLU, except after the
        first convolution (as in the start code's DWI network, ``munet_res_dti.py``).

    Attributes
    ----------
    config : dict
        The constructor arguments; ``MUNet(**model.config)`` rebuilds the architecture.

    Notes
    -----
    Convolutions use zero ("same") padding of 1 voxel and stride 1, so the output has the
    spatial shape of the input for any block size. Weights use He (Kaiming) normal
    initialisation for ReLU (``std = sqrt(2 / fan_in)``), biases start at zero. Keras'
    ``he_normal`` truncates the normal at two standard deviations; this implementation does not.
    """

    def __init__(self, in_channels=1, out_channels=1, *, depth=18, width=64, batch_norm=False):
        super().__init__()
        _check_architecture(in_channels, out_channels, depth, width)
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "depth": depth,
            "width": width,
            "batch_norm": bool(batch_norm),
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        n_stages = depth // 2
        self.n_encoder = n_stages // 2 + 1
        stages = []
        for stage in range(1, n_stages + 1):
            if stage == 1:
                channels = in_channels
            elif stage <= self.n_encoder:
                channels = width
            else:
                channels = 2 * width
            stages.append(_Stage(channels, width, batch_norm=bool(batch_norm),
                                 first_batch_norm=stage > 1))
        self.stages = nn.ModuleList(stages)
        self.output = nn.Conv3d(width, out_channels, 3, padding=1, bias=True)
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise every convolution (He normal weights, zero biases) and batch norm."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                module.reset_parameters()

    def residual(self, x):
        """Predicted residual.

        Parameters
        ----------
        x : torch.Tensor of shape (B, in_channels, X, Y, Z)

        Returns
        -------
        torch.Tensor of shape (B, out_channels, X, Y, Z)
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        outputs = []
        features = x
        for index, stage in enumerate(self.stages, start=1):
            if index > self.n_encoder:
                mirror = outputs[len(self.stages) - index]  # conv_{S + 1 - s}
                features = torch.cat([mirror, features], dim=1)
            features = stage(features)
            outputs.append(features)
        return self.output(features)

    def forward(self, x):
        """Denoised block ``x + residual(x)`` (the residual alone if the channels differ).

        Parameters
        ----------
        x : torch.Tensor of shape (B, in_channels, X, Y, Z)

        Returns
        -------
        torch.Tensor of shape (B, out_channels, X, Y, Z)
        """
        residual = self.residual(x)
        if self.in_channels == self.out_channels:
            return x + residual
        return residual


def count_parameters(model):
    """Number of trainable parameters of ``model`` (int)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model, block_shape):
    """Floating-point operations of the convolutions for one forward pass of one block.

    Counts ``2 x`` the multiply-adds of every ``Conv3d`` in ``model`` (biases, activations,
    batch norm and concatenations are not counted), assuming each convolution sees a block of
    spatial shape ``block_shape`` (true for MU-Net, whose convolutions keep the resolution).

    Parameters
    ----------
    model : torch.nn.Module
    block_shape : int or tuple of 3 ints
        Spatial shape of the block, in voxels.

    Returns
    -------
    int
        FLOPs for one block (batch size 1). A training step costs about three times as much
        (forward plus backward).
    """
    if isinstance(block_shape, int):
        block_shape = (block_shape,) * 3
    block_shape = tuple(int(n) for n in block_shape)
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise ValueError(f"block_shape must be 3 positive integers, got {block_shape!r}")
    total = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv3d):
            continue
        voxels = 1
        for n, k, s, p, d in zip(block_shape, module.kernel_size, module.stride,
                                 module.padding, module.dilation):
            voxels *= (n + 2 * p - d * (k - 1) - 1) // s + 1
        k_volume = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
        macs = voxels * module.out_channels * (module.in_channels // module.groups) * k_volume
        total += 2 * macs
    return int(total)
