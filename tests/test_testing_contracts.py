"""x2i_core.testing: the encoder and aligner contract checks pass good plugins and name what breaks bad ones."""
import pytest
import torch

from x2i_core.alignnet import AlignNet
from x2i_core.interfaces import EncodedPrompt, MultimodalEncoder
from x2i_core.testing import check_aligner, check_encoder


class ToyEncoder(MultimodalEncoder):
    """Characters as tokens; each layer a causal running mean (so padding must be masked to not leak)."""

    layers, width = 3, 8

    def __init__(self, leak_padding=False, skip_checks=False, grad=False):
        self.leak_padding, self.skip_checks, self.grad = leak_padding, skip_checks, grad
        self.table = torch.randn(256, self.width, generator=torch.Generator().manual_seed(0))

    @classmethod
    def from_pretrained(cls, pretrained, **options):
        return cls()

    @property
    def num_layers(self):
        return self.layers

    @property
    def hidden_size(self):
        return self.width

    def encode(self, prompts):
        if not self.skip_checks:
            for p in prompts:
                self.check_prompt(p)
        texts = [p.text.encode()[:64] or b" " for p in prompts]
        length = max(map(len, texts))
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            ids[i, : len(t)] = torch.tensor(list(t))
            mask[i, : len(t)] = True
        x = self.table[ids].requires_grad_(self.grad)
        if self.leak_padding:  # left padding without a mask: real tokens see the pad tokens before them
            x = torch.flip(x, [1])
            mask = torch.flip(mask, [1])
        states = [x]
        for _ in range(self.layers - 1):
            x = torch.cumsum(x, 1) / torch.arange(1, length + 1)[None, :, None]
            states.append(x)
        return EncodedPrompt(torch.stack(states, 1), mask)


def test_good_encoder_passes():
    check_encoder(ToyEncoder())


@pytest.mark.parametrize("encoder, message", [
    (ToyEncoder(leak_padding=True), "padding changed prompt 0"),
    (ToyEncoder(skip_checks=True), "call self.check_prompt"),
    (ToyEncoder(grad=True), "without autograd"),
])
def test_bad_encoders_are_named(encoder, message):
    with pytest.raises(AssertionError, match=message):
        check_encoder(encoder)


class LyingEncoder(ToyEncoder):
    """Claims 5 layers, returns 3."""

    @property
    def num_layers(self):
        return 5


def test_wrong_shape_is_named():
    with pytest.raises(AssertionError, match="C=num_layers=5"):
        check_encoder(LyingEncoder())


def test_alignnet_passes_check_aligner():
    torch.manual_seed(0)
    encoder = ToyEncoder()
    for masked_pool in (True, False):
        aligner = AlignNet(num_layers=3, hidden_size=8, prompt_dim=16, pooled_dim=12, masked_pool=masked_pool)
        check_aligner(aligner, encoder)
        assert all(p.grad is None for p in aligner.parameters())


def test_check_aligner_catches_wrong_encoder():
    aligner = AlignNet(num_layers=4, hidden_size=8, prompt_dim=16, pooled_dim=12)
    with pytest.raises(AssertionError, match="check_fits rejected"):
        check_aligner(aligner, ToyEncoder())
