"""CUDA checks, skipped on machines without a GPU (CI has none; run them where one is lent)."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, make_schedule
from diffusion_lab.models import ContextUnet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("sampler_class", [DDPMSampler, DDIMSampler])
def test_cuda_sampling_matches_cpu_with_a_cpu_generator(sampler_class):
    torch.manual_seed(0)
    net = ContextUnet(3, 16, 5, 16).eval()
    schedule = make_schedule("linear", 50)
    sampler = sampler_class(schedule)
    noise = torch.randn(8, 3, 16, 16)
    contexts = torch.eye(5)[torch.arange(8) % 5]
    on_cpu = sampler.sample(net, noise, contexts, 1.0, torch.Generator().manual_seed(1))
    on_gpu = sampler.sample(
        net.cuda(), noise.cuda(), contexts.cuda(), 1.0, torch.Generator().manual_seed(1)
    )
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-3)


def test_q_sample_and_schedule_tables_follow_the_image_device():
    schedule = make_schedule("cosine", 100).to("cuda")
    x0 = torch.randn(4, 1, 8, 8, device="cuda")
    t = torch.randint(1, 101, (4,), device="cuda")
    x_t = schedule.q_sample(x0, t, torch.randn_like(x0))
    assert x_t.device.type == "cuda" and x_t.dtype == torch.float32
