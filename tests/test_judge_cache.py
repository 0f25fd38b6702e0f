"""The judge cache: a second use trains nothing, and an entry that does not check out (corrupted,
truncated, another key, another format) is rebuilt rather than trusted."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion_lab.evaluation import judge_cache
from diffusion_lab.evaluation.judge_cache import JudgeOptions, get_judge, judge_key

OPTIONS = JudgeOptions(epochs=1, batch_size=16, lr=1e-3, seed=0)
NAMES = ["dark", "bright"]


def splits(seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(train, val) of a separable toy: uint8 (n, 1, 8, 8) images around 40 or 200 by class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(48) % 2
    base = torch.where(labels[:, None, None, None] == 1, 200, 40)
    images = (base + torch.randint(-40, 41, (48, 1, 8, 8), generator=generator)).clamp(0, 255)
    images = images.to(torch.uint8)
    return (images[:32], labels[:32]), (images[32:], labels[32:])


class TrainingCounter:
    """Wraps judge_cache.train_classifier and counts its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.real = judge_cache.train_classifier
        monkeypatch.setattr(judge_cache, "train_classifier", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_second_use_trains_nothing_and_gives_the_same_judge(tmp_path, monkeypatch):
    counter = TrainingCounter(monkeypatch)
    train, val = splits()
    first = get_judge(train, val, NAMES, OPTIONS, tmp_path)
    second = get_judge(train, val, NAMES, OPTIONS, tmp_path)
    assert counter.calls == 1
    assert first.trained and not second.trained
    assert second.path == first.path and first.path.parent == tmp_path
    assert second.accuracy == first.accuracy and second.seconds == first.seconds
    assert same_weights(first.classifier, second.classifier)
    assert not second.classifier.training
    images = train[0].float() / 127.5 - 1
    torch.testing.assert_close(second.classifier(images), first.classifier(images))
    assert [path.name for path in tmp_path.iterdir()] == [first.path.name]  # no temporary left


def test_anything_that_changes_the_judge_changes_the_key():
    train, val = splits()
    base, _ = judge_key(train, val, NAMES, OPTIONS)
    flipped = train[0].clone()
    flipped[0, 0, 0, 0] ^= 1  # one pixel of one image
    moved = (torch.cat([train[0], val[0][:1]]), torch.cat([train[1], val[1][:1]]))  # the split
    changed = [
        judge_key((flipped, train[1]), val, NAMES, OPTIONS)[0],
        judge_key(moved, (val[0][1:], val[1][1:]), NAMES, OPTIONS)[0],
        judge_key(train, val, ["bright", "dark"], OPTIONS)[0],
        judge_key(train, val, NAMES, JudgeOptions(2, 16, 1e-3, 0))[0],
        judge_key(train, val, NAMES, JudgeOptions(1, 8, 1e-3, 0))[0],
        judge_key(train, val, NAMES, JudgeOptions(1, 16, 1e-2, 0))[0],
        judge_key(train, val, NAMES, JudgeOptions(1, 16, 1e-3, 1))[0],
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    assert judge_key(*splits(), NAMES, OPTIONS)[0] == base  # the same data: the same key


def test_code_version_is_part_of_the_key(monkeypatch):
    train, val = splits()
    before, fields = judge_key(train, val, NAMES, OPTIONS)
    assert fields["judge_code_version"] == judge_cache.JUDGE_CODE_VERSION
    monkeypatch.setattr(judge_cache, "JUDGE_CODE_VERSION", judge_cache.JUDGE_CODE_VERSION + 1)
    assert judge_key(train, val, NAMES, OPTIONS)[0] != before


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def _other_key(data: bytes) -> bytes:
    header, _, payload = data.partition(b"\n")
    fields = json.loads(header)
    fields["key"] = "0" * 32
    return json.dumps(fields).encode() + b"\n" + payload


@pytest.mark.parametrize(
    "damage",
    [_flip_last_byte, lambda data: data[: len(data) // 2], lambda data: b"", _other_key],
    ids=["flipped-byte", "truncated", "empty", "other-key"],
)
def test_a_damaged_entry_is_rebuilt_not_trusted(tmp_path, monkeypatch, caplog, damage):
    train, val = splits()
    first = get_judge(train, val, NAMES, OPTIONS, tmp_path)
    first.path.write_bytes(damage(first.path.read_bytes()))
    counter = TrainingCounter(monkeypatch)
    rebuilt = get_judge(train, val, NAMES, OPTIONS, tmp_path)
    assert counter.calls == 1 and rebuilt.trained
    assert "is unusable" in caplog.text
    assert same_weights(first.classifier, rebuilt.classifier)  # CPU: the seed gives the same judge
    again = get_judge(train, val, NAMES, OPTIONS, tmp_path)  # the rebuilt entry is good
    assert counter.calls == 1 and not again.trained


def test_without_a_cache_dir_every_use_trains(monkeypatch):
    counter = TrainingCounter(monkeypatch)
    train, val = splits()
    for _ in range(2):
        assert get_judge(train, val, NAMES, OPTIONS, None).path is None
    assert counter.calls == 2


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="classifier.epochs must be an integer >= 1, got 0"):
        JudgeOptions(epochs=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        JudgeOptions(seed=-1)
