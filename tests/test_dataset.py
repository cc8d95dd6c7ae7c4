"""``lrp_fx.attribute_dataset``: shards and index, resume after crashes, integrity checks, ``torchrun`` with 2 ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx import dataset as ds

pytest.importorskip("safetensors")
pytest.importorskip("tqdm")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "attribute_dataset_torchrun.py"


def _example():
    spec = importlib.util.spec_from_file_location("attribute_dataset_torchrun", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EX = _example()


class Images(torch.utils.data.Dataset):
    """Seeded random 3x16x16 images with labels; ``fail_at`` raises when that sample is loaded (a crash)."""

    def __init__(self, n: int = 14, fail_at: int | None = None) -> None:
        self.data = EX.build_dataset(n)
        self.fail_at = fail_at

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise RuntimeError(f"simulated crash while loading sample {i}")
        return self.data[i]


@pytest.fixture(scope="module")
def model():
    return EX.build_model()


def _loader(n: int = 14, fail_at: int | None = None, batch_size: int = 3):
    return torch.utils.data.DataLoader(Images(n, fail_at), batch_size=batch_size)


def _run(model, out, loader=None, **kw):
    kw.setdefault("batches_per_shard", 2)
    kw.setdefault("progress", False)
    return lrp_fx.attribute_dataset(model, loader if loader is not None else _loader(), out, **kw)


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.safetensors"))}


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """An uninterrupted single-process run: 14 samples, batches of 3 (the last has 2), 2 batches per shard."""
    out = tmp_path_factory.mktemp("reference")
    res = _run(model, out)
    return out, res, lrp_fx.load_relevance(out)


# --------------------------------------------------------------------------------------------------- single run
def test_shards_index_and_values(model, reference):
    out, res, loaded = reference
    assert res.complete and res.computed == [0, 1, 2] and res.skipped == []
    assert res.num_samples == 14 and res.num_shards == 3 and res.samples_computed == 14
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["num_shards"] == 3 and index["missing"] == []
    assert [s["batches"] for s in index["shards"]] == [[0, 1], [2, 3], [4]]
    assert [s["samples"] for s in index["shards"]] == [6, 6, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]
    assert loaded["relevance"].shape == (14, 3, 16, 16)
    assert torch.equal(loaded["sample"], torch.arange(14))
    images = torch.stack([Images()[i][0] for i in range(14)])
    for start in range(0, 14, 3):  # the same numbers as attribute() on each batch
        expected = lrp_fx.attribute(model, images[start : start + 3])
        assert torch.equal(loaded["relevance"][start : start + 3], expected.relevance)
        assert torch.equal(loaded["output"][start : start + 3], expected.output)
    assert torch.equal(loaded["target"], loaded["output"].argmax(-1))  # target=None: the predicted class


def test_progress_bar_shows_throughput(model, tmp_path, capsys):
    _run(model, tmp_path, _loader(6), progress=True)
    err = capsys.readouterr().err
    assert "attribute_dataset" in err and "samples_per_s" in err and "2/2" in err


def test_label_targets_and_a_plain_iterable(model, tmp_path):
    batches = list(_loader())  # a list of (images, labels): iterated, not indexed
    res = _run(model, tmp_path, batches, target="label")
    loaded = res.load()
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(loaded["target"], labels)
    expected = lrp_fx.attribute(model, batches[1][0], target=batches[1][1]).relevance
    assert torch.equal(loaded["relevance"][3:6], expected)
    again = _run(model, tmp_path, batches, target="label")
    assert again.computed == [] and again.skipped == [0, 1, 2]
    with pytest.raises(lrp_fx.InputError, match="differ"):  # same folder, other order: refused
        _run(model, tmp_path, batches[::-1], target="label")


def test_dict_batches_of_token_ids(tmp_path):
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, input_ids):
            return self.head(self.emb(input_ids).mean(1))

    torch.manual_seed(0)
    bag = Bag().eval()
    ids = torch.randint(0, 20, (5, 7))
    batches = [{"input_ids": ids[i : i + 2], "labels": torch.tensor([0, 1][: len(ids[i : i + 2])])} for i in (0, 2, 4)]
    res = _run(bag, tmp_path, batches, target="label", batches_per_shard=1)
    loaded = res.load()
    assert loaded["relevance.input_ids"].shape == (5, 7)
    expected = lrp_fx.attribute(bag, {"input_ids": ids[:2]}, target=torch.tensor([0, 1])).relevance["input_ids"]
    assert torch.equal(loaded["relevance.input_ids"][:2], expected)


@pytest.mark.parametrize("batches_per_shard", [1, 2])
def test_text_batches_padded_each_to_its_own_length(tmp_path, batches_per_shard):
    """A Hugging Face collator pads each batch to its longest text: shards and ``load_relevance`` pad with zeros to
    the longest (a ``torch.cat`` size error lost the shard before), each sample's values as ``attribute`` gives."""

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask):
            return self.head((self.emb(input_ids) * attention_mask[..., None]).sum(1))

    torch.manual_seed(0)
    text = Text().eval()
    batches = [
        {"input_ids": torch.randint(0, 20, (n, length)), "attention_mask": torch.ones(n, length)}
        for n, length in ((3, 6), (3, 7), (1, 3))
    ]
    loaded = _run(text, tmp_path, batches, batches_per_shard=batches_per_shard).load()
    rel = loaded["relevance.attention_mask"]
    assert rel.shape == (7, 7)
    row = 0
    for b in batches:
        expected = lrp_fx.attribute(text, b).relevance["attention_mask"]
        n, length = expected.shape
        assert torch.equal(rel[row : row + n, :length], expected)
        assert not rel[row : row + n, length:].any()
        row += n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_get_attributes_defaults(tmp_path, dtype):
    """``attribute`` gives a half-precision model 1e-2 stabilisers; the dataset run used 1e-6 (24-29 % apart)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype).eval()
    x = torch.randn(8, 6, dtype=dtype)
    loaded = _run(net, tmp_path, [x[:4], x[4:]], composite="epsilon").load()
    expected = torch.cat([lrp_fx.attribute(net, b, composite="epsilon").relevance for b in (x[:4], x[4:])])
    assert torch.equal(loaded["relevance"], expected)


# ------------------------------------------------------------------------------------------------------- resume
def test_resume_after_crash_mid_shard(model, reference, tmp_path):
    ref_out, _, ref_loaded = reference
    # sample 7 is in batch 2 (samples 6-8), the first batch of shard 1: shard 0 is finished, shard 1 is not
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(model, tmp_path, _loader(fail_at=7))
    assert [p.name for p in tmp_path.glob("shard-*")] == ["shard-00000.safetensors"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert not index["complete"] and [s["id"] for s in index["shards"]] == [0]
    with pytest.raises(lrp_fx.InputError, match=r"incomplete \(finished shards so far: \[0\]\); rerun"):
        lrp_fx.load_relevance(tmp_path)
    # crash in the middle of the last shard's second half as well: shard 1 gets written, shard 2 not
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(model, tmp_path, _loader(fail_at=13))
    res = _run(model, tmp_path)
    assert res.skipped == [0, 1] and res.computed == [2] and res.complete
    _assert_same(lrp_fx.load_relevance(tmp_path), ref_loaded)
    assert _shard_bytes(tmp_path) == _shard_bytes(ref_out)


def test_crash_while_writing_a_shard(model, reference, tmp_path, monkeypatch):
    """Killed after the shard's bytes were written but before the rename: only a temporary file is left."""
    ref_out, _, ref_loaded = reference
    real_commit = ds._commit

    def commit(tmp: Path, path: Path) -> None:
        if path.name == "shard-00001.safetensors":
            raise KeyboardInterrupt("simulated kill during the rename")
        real_commit(tmp, path)

    monkeypatch.setattr(ds, "_commit", commit)
    with pytest.raises(KeyboardInterrupt):
        _run(model, tmp_path)
    monkeypatch.setattr(ds, "_commit", real_commit)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "shard-00001.safetensors" not in names
    assert any(n.startswith("shard-00001.safetensors.tmp-") for n in names)  # never mistaken for a shard
    res = _run(model, tmp_path)
    assert res.skipped == [0] and res.computed == [1, 2]
    assert not list(tmp_path.glob("*.tmp-*"))
    _assert_same(lrp_fx.load_relevance(tmp_path), ref_loaded)
    assert _shard_bytes(tmp_path) == _shard_bytes(ref_out)


def test_damaged_shard_is_recomputed_and_unlisted_shard_adopted(model, reference, tmp_path):
    ref_out, _, ref_loaded = reference
    _run(model, tmp_path)
    shard1 = tmp_path / "shard-00001.safetensors"
    shard1.write_bytes(shard1.read_bytes()[:-100])  # truncated: its size no longer matches the index
    res = _run(model, tmp_path)
    assert res.computed == [1] and res.skipped == [0, 2]
    # a crash between renaming a shard and updating the index: the complete shard is adopted from its header
    (tmp_path / "index.json").unlink()
    res = _run(model, tmp_path)
    assert res.computed == [] and res.skipped == [0, 1, 2] and res.complete
    _assert_same(lrp_fx.load_relevance(tmp_path), ref_loaded)
    # a bit flip that keeps the size is found by the SHA-256 check
    data = bytearray(shard1.read_bytes())
    data[-1] ^= 1
    shard1.write_bytes(bytes(data))
    assert _run(model, tmp_path).computed == [1]
    # ... and, for a shard no index lists, by the hash of its tensors recorded in its header
    shard1.write_bytes(bytes(data))
    (tmp_path / "index.json").unlink()
    assert _run(model, tmp_path).computed == [1]
    assert _shard_bytes(tmp_path) == _shard_bytes(ref_out)


def test_other_configuration_is_refused_unless_overwrite(model, reference, tmp_path):
    _run(model, tmp_path, _loader(6))
    with pytest.raises(lrp_fx.InputError, match="another configuration"):
        _run(model, tmp_path, _loader(6), composite="epsilon")
    res = _run(model, tmp_path, _loader(6), composite="epsilon", overwrite=True)
    assert res.computed == [0] and res.complete


def test_callables_are_part_of_the_configuration(model, tmp_path):
    """Every lambda is ``__main__.<lambda>`` by name: the configuration describes what it computes, so a rerun with
    another target callable is refused rather than mixed in, while the same code (a new function object, as in a
    resumed process) resumes."""
    _run(model, tmp_path, _loader(6), target=lambda batch: 0)
    with pytest.raises(lrp_fx.InputError, match="another configuration"):
        _run(model, tmp_path, _loader(6), target=lambda batch: 4)
    k = 4
    with pytest.raises(lrp_fx.InputError, match="another configuration"):
        _run(model, tmp_path, _loader(6), target=lambda batch: k)  # the same class through a captured variable
    again = _run(model, tmp_path, _loader(6), target=lambda batch: 0)
    assert again.computed == [] and again.complete
    for delta in (0, 1):  # closures: the captured value counts
        out = tmp_path / f"closure{delta}"

        def shifted(batch, delta=delta):
            return 1 + delta

        _run(model, out, _loader(6), target=shifted)
        if delta:
            with pytest.raises(lrp_fx.InputError, match="another configuration"):
                _run(model, tmp_path / "closure0", _loader(6), target=shifted)


def test_hard_kill_mid_shard_then_resume(model, reference, tmp_path):
    """``os._exit`` in the middle of a shard (no cleanup at all), then the same script again."""
    _, _, ref_loaded = reference
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, torch, lrp_fx
            sys.path.insert(0, {str(EXAMPLE.parent)!r})
            import attribute_dataset_torchrun as ex

            class Data(torch.utils.data.Dataset):
                data = ex.build_dataset(14)
                def __len__(self):
                    return 14
                def __getitem__(self, i):
                    if i == 10 and os.environ.get("CRASH"):
                        os._exit(17)
                    return self.data[i]

            loader = torch.utils.data.DataLoader(Data(), batch_size=3)
            res = lrp_fx.attribute_dataset(ex.build_model(), loader, sys.argv[1], batches_per_shard=2, progress=False)
            print("computed", res.computed, "skipped", res.skipped)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    crashed = subprocess.run(
        [sys.executable, str(script), str(out)], env={**env, "CRASH": "1"}, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == 17, crashed.stderr
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.safetensors"]
    resumed = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "computed [1, 2] skipped [0]" in resumed.stdout
    _assert_same(lrp_fx.load_relevance(out), ref_loaded)


# -------------------------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_equal_one(tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo, CPU) writes the same shards as one process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # torchrun's default; the same for the single process, so the numbers match
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    args = ["--samples", "25", "--batch-size", "3", "--batches-per-shard", "2", "--target", "label"]
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(one), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(EXAMPLE)]
    multi = subprocess.run([*cmd, "--out", str(two), *args], env=env, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "rank 0/2: computed shards [0, 2, 4]" in multi.stdout
    assert "rank 1/2: computed shards [1, 3]" in multi.stdout
    _assert_same(lrp_fx.load_relevance(one), lrp_fx.load_relevance(two))
    assert _shard_bytes(one) == _shard_bytes(two)
    index = json.loads((two / "index.json").read_text())
    assert index["complete"] and index["world_size"] == 2 and index["num_samples"] == 25
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith("shard-")) == ["index.json"]
    # resuming the 2-process result in one process finds everything finished
    again = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(two), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "computed shards [], skipped [0, 1, 2, 3, 4]" in again.stdout


# ------------------------------------------------------------------------------------------------------------ docs
def test_docs_example_runs(tmp_path, monkeypatch):
    """The Python example of docs/dataset.md runs (in a temporary folder) and resumes without recomputing."""
    text = (REPO_ROOT / "docs" / "dataset.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "docs/dataset.md", "exec"), scope)
    res, rel = scope["res"], scope["rel"]
    assert res.computed == list(range(5)) and res.complete
    assert rel["relevance"].shape == (20, 3, 16, 16) and torch.equal(rel["target"], scope["labels"])
    exec(compile(example, "docs/dataset.md", "exec"), scope)
    assert scope["res"].computed == [] and scope["res"].skipped == list(range(5))
