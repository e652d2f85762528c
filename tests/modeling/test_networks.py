"""Every selectable backbone builds without downloads and runs; the fusion modes use the right inputs."""

from __future__ import annotations

import pytest
import torch

from pipelines.modeling.networks import EhrMLP, FusionNet, build_image_net, build_model
from pipelines.modeling.options import IMAGE_NETWORKS, MODES


@pytest.mark.parametrize("name", IMAGE_NETWORKS)
def test_each_image_network_maps_a_batch_to_its_embedding(name: str) -> None:
    torch.manual_seed(0)
    net = build_image_net(name, in_channels=1, out_features=8).eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()


def test_unknown_network_is_refused() -> None:
    with pytest.raises(ValueError, match="densenet-huge"):
        build_image_net("densenet-huge", out_features=4)


def test_densenet_tiny_is_much_smaller_than_densenet121() -> None:
    def size(name: str) -> int:
        return sum(p.numel() for p in build_image_net(name, out_features=16).parameters())

    assert size("densenet-tiny") * 50 < size("densenet121")


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_one_logit_per_study(mode: str) -> None:
    torch.manual_seed(0)
    model = build_model("densenet-tiny", mode, 4, embed_dim=8, ehr_hidden=8).eval()
    image = torch.rand(3, 1, 32, 32) if mode != "ehr" else None
    ehr = torch.randn(3, 4) if mode != "image" else None
    with torch.inference_mode():
        logits = model(image, ehr)
    assert logits.shape == (3,)
    assert (model.image_net is None) == (mode == "ehr")
    assert (model.ehr_net is None) == (mode == "image")


def test_fused_output_depends_on_both_inputs_and_image_mode_ignores_ehr() -> None:
    torch.manual_seed(0)
    image = torch.rand(2, 1, 32, 32)
    ehr_a, ehr_b = torch.zeros(2, 4), torch.full((2, 4), 3.0)
    fused = build_model("densenet-tiny", "fused", 4, embed_dim=8, ehr_hidden=8).eval()
    image_only = build_model("densenet-tiny", "image", 4, embed_dim=8, ehr_hidden=8).eval()
    with torch.inference_mode():
        assert not torch.equal(fused(image, ehr_a), fused(image, ehr_b))
        assert not torch.equal(fused(image, ehr_a), fused(image.flip(-1) * 0.5, ehr_a))
        assert torch.equal(image_only(image, ehr_a), image_only(image, ehr_b))


def test_missing_input_for_the_mode_is_an_error() -> None:
    model = build_model("densenet-tiny", "fused", 4, embed_dim=8, ehr_hidden=8)
    with pytest.raises(ValueError, match="EHR batch"):
        model(torch.rand(1, 1, 32, 32), None)
    with pytest.raises(ValueError, match="image network"):
        FusionNet("image", image_net=None, image_features=8, ehr_net=EhrMLP(4, 8, 8), ehr_features=8)
    with pytest.raises(ValueError, match="at least one EHR column"):
        EhrMLP(0, 8, 8)
