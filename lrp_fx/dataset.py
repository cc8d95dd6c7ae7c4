"""Dataset-scale attribution: ``attribute_dataset`` explains every batch of a data loader and writes the relevance
to disk as safetensors shards plus a JSON index.

Layout of the output folder::

    shard-00000.safetensors   batches 0 .. k-1 of the loader (k = ``batches_per_shard``), concatenated
    shard-00001.safetensors   batches k .. 2k-1, ...
    index.json                the job's configuration and every finished shard: samples, size, SHA-256

Each shard holds ``relevance`` (or ``relevance.<i>`` / ``relevance.<key>`` for tuple or dict inputs), ``output``,
``target`` (the explained class per sample, where there is one) and ``sample`` (the position of each sample in the
loader's order).

Crash safety. A shard is written under a temporary name, flushed to disk, then renamed (``os.replace``, atomic on
POSIX and Windows), so a file with a shard's final name is always complete; the index is replaced the same way after
every shard. A rerun with the same folder and configuration skips every shard whose file is listed in an index with
the right size and hash (or, written just before a crash, carries the right header), and recomputes the rest.

Processes. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) or inside an initialised
``torch.distributed`` process group, shard ``j`` belongs to rank ``j % world_size``; a shard does not depend on who
computed it (the files are byte-identical), and at the end rank 0 merges what every rank finished into ``index.json``,
so the result equals a single-process run. Every rank needs the same batches in the same order: no unseeded
shuffling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .api import _UNBOUND, _float_dtypes, function_reads
from .composites import Composite, precision_defaults, resolve
from .errors import InputError

__all__ = ["DatasetAttribution", "attribute_dataset", "load_relevance", "iter_shards", "local_device"]

FORMAT = "lrp_fx.attribute_dataset"
VERSION = 1
INDEX = "index.json"
_SHARD = "shard-{:05d}.safetensors"
_RANK_INDEX = "index.rank{}.json"
_TMP = ".tmp-"


# ------------------------------------------------------------------------------------------------------ result type
@dataclass
class DatasetAttribution:
    """What ``attribute_dataset`` did. ``index`` is the parsed ``index.json``; ``computed``/``skipped`` list the shard
    ids this process computed or found finished; ``samples_per_second`` counts computed samples only."""

    path: Path
    index: dict[str, Any]
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    samples_computed: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def complete(self) -> bool:
        return bool(self.index.get("complete"))

    @property
    def num_samples(self) -> int:
        return int(self.index.get("num_samples", 0))

    @property
    def num_shards(self) -> int:
        return len(self.index.get("shards", []))

    @property
    def samples_per_second(self) -> float:
        return self.samples_computed / self.seconds if self.seconds > 0 else 0.0

    def shard_paths(self) -> list[Path]:
        return [self.path / s["file"] for s in self.index.get("shards", [])]

    def load(self, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        """All shards concatenated in sample order (see :func:`load_relevance`)."""
        return load_relevance(self.path, keys=keys)


# ----------------------------------------------------------------------------------------------------------- files
def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` either keeps its old content or has all of the new one, never a part."""
    tmp = path.with_name(f"{path.name}{_TMP}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the bytes must be on disk before the rename makes them look complete
    _commit(tmp, path)


def _commit(tmp: Path, path: Path) -> None:
    """Rename the finished temporary file to its final name (atomic), then persist the directory entry."""
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: fsync the folder so the rename itself survives a power cut
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable index ({type(exc).__name__}: {exc})") from exc


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------------- batches
def _default_inputs(batch: Any) -> Any:
    """The model inputs of a batch: a tensor as is, ``(inputs, labels, ...)`` -> inputs, a dict without labels."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in ("label", "labels")}
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise InputError(f"cannot tell the inputs in a batch of type {type(batch).__name__}; pass inputs=callable")


def _labels(batch: Any) -> Tensor:
    if isinstance(batch, Mapping):
        for key in ("labels", "label"):
            if key in batch:
                return batch[key]
        raise InputError("target='label' needs a 'labels' or 'label' entry in each batch")
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        return batch[1]
    raise InputError("target='label' needs batches of the form (inputs, labels, ...)")


def _leaves(inputs: Any) -> list[tuple[str, Any]]:
    """``(suffix, value)`` per top-level input: ``""`` for a tensor, ``".i"`` for sequences, ``".key"`` for dicts."""
    if isinstance(inputs, Tensor):
        return [("", inputs)]
    if isinstance(inputs, Mapping):
        return [(f".{k}", v) for k, v in inputs.items()]
    if isinstance(inputs, (tuple, list)):
        return [(f".{i}", v) for i, v in enumerate(inputs)]
    return []


def _batch_size(inputs: Any) -> int:
    for _, value in _leaves(inputs):
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise InputError("no batched tensor in the inputs (the first dimension of a tensor input is the batch)")


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: _to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_device(v, device) for v in inputs)
    return inputs


def _hash_inputs(h: Any, inputs: Any) -> None:
    """Feed dtype, shape and bytes of every tensor input into ``h`` (detects a loader that changed its order)."""
    for name, value in _leaves(inputs):
        h.update(name.encode())
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())


def _explained_classes(target: Any, output: Tensor, n: int) -> Tensor | None:
    """The class each sample was explained for, where the target names one (else ``None``)."""
    if target is None:
        return output.argmax(-1).to(torch.int64) if output.dim() == 2 else None
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.int64)
    if isinstance(target, Tensor) and not target.is_floating_point():
        t = target.detach().cpu().to(torch.int64)
        return t.expand(n).clone() if t.dim() == 0 else (t if t.shape == (n,) else None)
    return None


# ---------------------------------------------------------------------------------------------------- processes
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owned: bool = False  # we initialised the process group, so we destroy it

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owned and torch.distributed.is_initialized():
            # every rank reaches this point before any tears gloo down: a rank destroying the group while another
            # still waits in its last collective aborts the other ("terminate called without an active exception")
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (one GPU per ``torchrun`` process), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _distributed(device: torch.device) -> _Dist:
    """Join the process group of ``torchrun`` (or use an initialised one); a single process otherwise."""
    dist = torch.distributed
    if not dist.is_available():
        return _Dist()
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return _Dist()
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # nccl collectives run on the rank's own GPU
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), owned=True)


# ----------------------------------------------------------------------------------------------------- the plan
@dataclass
class _Batch:
    number: int  # position in the loader's order
    size: int
    first_sample: int
    data: Any = None  # the batch itself (None when it was not loaded)


def _is_map_loader(loader: Any) -> bool:
    data = torch.utils.data
    return (
        isinstance(loader, data.DataLoader)
        and not isinstance(loader.dataset, data.IterableDataset)
        and loader.batch_sampler is not None
    )


def _subset_loader(loader: Any, batches: list[list[int]]) -> Any:
    """A loader over the same dataset, collate function and workers that yields only ``batches`` (index lists)."""
    kwargs: dict[str, Any] = dict(
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
    )
    if loader.num_workers > 0:
        kwargs.update(multiprocessing_context=loader.multiprocessing_context, prefetch_factor=loader.prefetch_factor)
    return torch.utils.data.DataLoader(loader.dataset, **kwargs)


class _Plan:
    """Which batches form which shard and which rank computes it.

    Map-style ``DataLoader``: the batch index lists are drawn once from its batch sampler, so every shard's sample
    indices are known up front and only this rank's unfinished batches are loaded. Any other iterable: every rank
    iterates all batches (to keep the order) and skips those that are not its own.
    """

    def __init__(self, loader: Iterable, batches_per_shard: int, dist: _Dist, inputs_fn: Callable[[Any], Any]) -> None:
        self.loader = loader
        self.bps = batches_per_shard
        self.dist = dist
        self.inputs_fn = inputs_fn
        self.total_batches = self.total_samples = 0
        self.index_lists: list[list[int]] | None = None
        if _is_map_loader(loader):
            self.index_lists = [list(map(int, b)) for b in loader.batch_sampler]

    def owner(self, shard: int) -> int:
        return shard % self.dist.world

    def shard_key(self, shard: int) -> str | None:
        """For map-style loaders, a hash of the shard's sample indices (cheap; the order check on resume)."""
        if self.index_lists is None:
            return None
        lists = self.index_lists[shard * self.bps : (shard + 1) * self.bps]
        return hashlib.sha256(json.dumps(lists).encode()).hexdigest()

    def own_batches(self, skip: set[int]) -> int | None:
        """How many batches this rank will load (for the progress bar), if known."""
        if self.index_lists is not None:
            n = len(self.index_lists)
            return sum(1 for b in range(n) if self.owner(b // self.bps) == self.dist.rank and b // self.bps not in skip)
        try:
            n = len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            return None
        return sum(1 for b in range(n) if self.owner(b // self.bps) == self.dist.rank)

    def batches(self, skip: set[int]) -> Iterator[_Batch]:
        """This rank's batches in order, shards in ``skip`` excluded where the loader allows not loading them."""
        if self.index_lists is not None:
            firsts, total = [], 0
            for lst in self.index_lists:
                firsts.append(total)
                total += len(lst)
            self.total_batches, self.total_samples = len(self.index_lists), total
            mine = [
                b
                for b in range(len(self.index_lists))
                if self.owner(b // self.bps) == self.dist.rank and b // self.bps not in skip
            ]
            loader = _subset_loader(self.loader, [self.index_lists[b] for b in mine])
            for b, data in zip(mine, loader):
                yield _Batch(b, len(self.index_lists[b]), firsts[b], data)
            return
        first = 0
        count = 0
        for b, data in enumerate(self.loader):
            size = _batch_size(self.inputs_fn(data))
            mine = self.owner(b // self.bps) == self.dist.rank
            yield _Batch(b, size, first, data if mine else None)
            first += size
            count = b + 1
        self.total_batches, self.total_samples = count, first


# ------------------------------------------------------------------------------------------------------- the index
def _config(
    model: nn.Module,
    composite: Composite,
    target: Any,
    batches_per_shard: int,
    output: Any,
    save_output: bool,
    inputs_fn: Callable | None,
) -> dict[str, Any]:
    """What the shards depend on besides the data: a rerun with a different configuration must not reuse them."""

    def describe(obj: Any) -> str:
        if obj is None or isinstance(obj, (int, str)):
            return repr(obj)
        if callable(obj):
            name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
            return f"callable {name} [{_callable_digest(obj)}]"
        return repr(obj)

    params = sum(p.numel() for p in model.parameters())
    return {
        "model": f"{type(model).__module__}.{type(model).__qualname__} ({params} parameters)",
        "composite": repr(composite.key()),
        "target": describe(target),
        "output": describe(output),
        "inputs": describe(inputs_fn),
        "batches_per_shard": batches_per_shard,
        "save_output": save_output,
    }


def _callable_digest(fn: Any, depth: int = 0) -> str:
    """A digest of what a callable computes that is stable across processes (a resumed run is a new process): for a
    function its bytecode, constants and names, and the values it reads (closure cells, defaults, the globals it
    loads); for a ``functools.partial`` its function and arguments. Every lambda is ``__main__.<lambda>`` by name, so
    the name alone would let ``target=lambda b: 4`` resume a folder computed with ``target=lambda b: 0``. Values
    without a stable description (objects) enter by type only."""
    h = hashlib.sha256()
    if isinstance(fn, functools.partial):
        h.update(_callable_digest(fn.func, depth + 1).encode())
        h.update(_stable_repr((fn.args, sorted(fn.keywords.items())), depth).encode())
    elif isinstance(fn, types.FunctionType) and depth < 4:
        h.update(_code_digest(fn.__code__).encode())
        cells, defaults, kwdefaults, loaded = function_reads(fn)
        cells = [c for c in cells if c is not _UNBOUND]
        h.update(_stable_repr((cells, defaults, kwdefaults), depth).encode())
        for name, value in loaded:
            if name in fn.__globals__:  # builtins are the same in every process
                h.update(f"{name}={_stable_repr(value, depth)}".encode())
    else:
        h.update(type(fn).__qualname__.encode())
    return h.hexdigest()[:12]


def _code_digest(code: types.CodeType) -> str:
    consts = [_code_digest(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return hashlib.sha256(repr((code.co_code, consts, code.co_names, code.co_varnames)).encode()).hexdigest()


def _stable_repr(v: Any, depth: int) -> str:
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return f"{type(v).__name__}({','.join(_stable_repr(e, depth) for e in v)})"
    if isinstance(v, dict):
        return "dict(" + ",".join(f"{_stable_repr(k, depth)}:{_stable_repr(e, depth)}" for k, e in v.items()) + ")"
    if isinstance(v, Tensor):
        data = v.detach().cpu().contiguous().reshape(-1)
        digest = "large"
        if data.numel() <= 1 << 20:
            digest = hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()[:12]
        return f"tensor({tuple(v.shape)},{v.dtype},{digest})"
    if isinstance(v, types.ModuleType):
        return f"module {v.__name__}"
    if callable(v):
        return f"callable {getattr(v, '__qualname__', type(v).__qualname__)} [{_callable_digest(v, depth + 1)}]"
    return f"object {type(v).__module__}.{type(v).__qualname__}"


def _config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _index_files(out: Path) -> list[Path]:
    return [out / INDEX, *sorted(out.glob(_RANK_INDEX.format("*")))]


def _known_shards(out: Path, config_hash: str) -> dict[int, list[dict[str, Any]]]:
    """Finished shards listed by any index in ``out`` (the merged one and the per-rank progress files of an
    interrupted run): the candidate entries per shard id, newest file last."""
    known: dict[int, list[dict[str, Any]]] = {}
    for path in _index_files(out):
        index = _read_json(path)
        if index is None:
            continue
        if index.get("format") != FORMAT:
            raise InputError(f"{path} is not an attribute_dataset index")
        if index.get("config_hash") != config_hash:
            raise InputError(
                f"{out} holds relevance computed with another configuration ({path.name}: {index.get('config')}); "
                "use a new folder or overwrite=True"
            )
        for entry in index.get("shards", []):
            known.setdefault(int(entry["id"]), []).append(entry)
    return known


def _shard_header(path: Path) -> dict[str, Any] | None:
    """The metadata of a complete safetensors file, or ``None`` if it is missing, truncated or not safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("lrp_fx", "{}"))
    except (OSError, SafetensorError, ValueError):
        return None


def _valid_entry(
    out: Path, shard: int, entries: Sequence[dict[str, Any]], config_hash: str, verify: bool
) -> dict[str, Any] | None:
    """The index entry of a finished, intact shard file (adopting an unlisted one from its header), else ``None``."""
    path = out / _SHARD.format(shard)
    if not path.is_file():
        return None
    if entries:  # listed: intact only if size (and hash) match an entry; a damaged file is recomputed
        size = path.stat().st_size
        sha = _sha256_file(path) if verify else None
        for entry in reversed(entries):  # newest index first
            if entry.get("bytes") == size and (not verify or entry.get("sha256") == sha):
                return entry
        return None
    # written and renamed, but the process died before an index listed it: adopt it if its header is complete and
    # (with verify) its tensors hash to what the header recorded
    header = _shard_header(path)
    if not header or header.get("config_hash") != config_hash or header.get("shard") != shard:
        return None
    if verify:
        from safetensors.torch import load_file

        try:
            if _tensor_digest(load_file(str(path))) != header.get("data_sha256"):
                return None
        except Exception:  # unreadable data: recompute
            return None
    try:
        return _entry_from_header(path, shard, header)
    except KeyError:  # a header of another version
        return None


def _tensor_digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (stored in each shard's header)."""
    h = hashlib.sha256()
    _hash_inputs(h, {k: tensors[k] for k in sorted(tensors)})
    return h.hexdigest()


def _entry_from_header(path: Path, shard: int, header: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("samples", "first_sample", "batches", "digest", "keys")
    return {
        "id": shard,
        "file": path.name,
        **{k: header[k] for k in keys},
        "bytes": path.stat().st_size,
        "sha256": _sha256_file(path),
    }


def _index_doc(config: dict, config_hash: str, shards: Mapping[int, dict], **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "config_hash": config_hash,
        "shards": [shards[k] for k in sorted(shards)],
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------- worker
class _ShardWriter:
    """Collects one shard's per-batch results and writes them as one safetensors file."""

    def __init__(self, shard: int, out: Path, config_hash: str) -> None:
        self.shard, self.out, self.config_hash = shard, out, config_hash
        self.parts: dict[str, list[Tensor]] = {}
        self.batches: list[int] = []
        self.first_sample: int | None = None
        self.samples = 0

    def add(self, batch: _Batch, tensors: Mapping[str, Tensor]) -> None:
        if self.first_sample is None:
            self.first_sample = batch.first_sample
        self.batches.append(batch.number)
        self.samples += batch.size
        for key, t in tensors.items():
            self.parts.setdefault(key, []).append(t.detach().cpu().contiguous())

    def write(self, digest: str) -> dict[str, Any]:
        from safetensors.torch import save

        tensors = {k: _cat_padded(v) for k, v in self.parts.items()}
        header = {
            "format": FORMAT,
            "config_hash": self.config_hash,
            "shard": self.shard,
            "samples": self.samples,
            "first_sample": self.first_sample or 0,
            "batches": self.batches,
            "digest": digest,
            "keys": sorted(tensors),
            "data_sha256": _tensor_digest(tensors),
        }
        # one metadata entry: safetensors orders several in a hash map, one JSON string keeps the bytes reproducible
        data = save(tensors, metadata={"lrp_fx": json.dumps(header, sort_keys=True)})
        path = self.out / _SHARD.format(self.shard)
        for stale in self.out.glob(f"{path.name}{_TMP}*"):  # left by a run that died while writing this shard
            stale.unlink(missing_ok=True)
        _atomic_write(path, data)
        return {
            "id": self.shard,
            "file": path.name,
            "samples": self.samples,
            "first_sample": self.first_sample or 0,
            "batches": self.batches,
            "digest": digest,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "keys": sorted(tensors),
        }


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def attribute_dataset(
    model: nn.Module,
    dataloader: Iterable,
    out_dir: str | Path,
    *,
    target: None | int | str | Callable[[Any], Any] = None,
    composite: str | Composite = "epsilon_plus_flat",
    inputs: Callable[[Any], Any] | None = None,
    batches_per_shard: int = 1,
    output: Any = None,
    overrides: Mapping[Any, Any] | None = None,
    strict: bool = True,
    memory_budget: int | None = None,
    device: str | torch.device | None = None,
    save_output: bool = True,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool | None = None,
    **rule_params: Any,
) -> DatasetAttribution:
    """Attribute every batch of ``dataloader`` with :func:`lrp_fx.attribute` and write relevance shards to ``out_dir``.

    Args:
        model: the model (as for ``attribute``); under ``torchrun`` each process builds its own copy, on its device.
        dataloader: any iterable of batches; a map-style ``torch.utils.data.DataLoader`` lets each rank load only its
            own batches. The order must be the same on every rank and on a rerun (no unseeded shuffling).
        out_dir: the output folder (created). Rerunning into it resumes: finished shards are kept, not recomputed.
        target: ``None`` explains each sample's predicted class; an ``int`` one class for all; ``"label"`` the
            labels in the batch (``batch[1]``, or ``batch["labels"]``); a callable ``f(batch)`` returns any target
            ``attribute`` accepts.
        composite: preset name or ``Composite``; ``**rule_params`` go into the preset (``epsilon=``, ``gamma=``...).
        inputs: ``f(batch) -> model inputs``; default: a tensor batch as is, ``batch[0]`` of a tuple, a dict batch
            without its ``label(s)`` entry.
        batches_per_shard: consecutive batches stored per shard file (and the unit of work lost to a crash).
        output, overrides, strict, memory_budget: as for ``attribute``.
        device: where inputs go; default the model's device.
        save_output: also store the explained model output per sample.
        overwrite: delete existing shards and indexes in ``out_dir`` first instead of resuming.
        verify: on resume, check each finished shard's SHA-256 (else only its size).
        progress: tqdm progress bar with throughput; default on rank 0 only.

    Returns:
        a :class:`DatasetAttribution`; ``.load()`` concatenates all shards (identical for any number of processes).
    """
    from .api import attribute

    if batches_per_shard < 1:
        raise InputError(f"batches_per_shard must be >= 1, got {batches_per_shard}")
    if isinstance(target, str) and target != "label":
        raise InputError(f"target must be None, an int, 'label' or a callable f(batch), got {target!r}")
    out = Path(out_dir)
    inputs_fn = inputs if inputs is not None else _default_inputs
    dev = torch.device(device) if device is not None else _model_device(model)
    # the configuration's record (resume checks it): a preset on a half-precision model takes the half-precision
    # stabilisers, as attribute gives it per batch below (from the model's and the batch's dtypes)
    comp = resolve(composite, overrides, precision_defaults(composite, dict(rule_params), _float_dtypes(model, [])))
    config = _config(model, comp, target, batches_per_shard, output, save_output, inputs)
    config_hash = _config_hash(config)
    dist = _distributed(dev)
    try:
        if overwrite:
            if dist.rank == 0:
                _clear(out)
            dist.barrier()
        out.mkdir(parents=True, exist_ok=True)
        plan = _Plan(dataloader, batches_per_shard, dist, inputs_fn)
        _check_same_order(plan, dist)
        done = _finished_shards(out, plan, _known_shards(out, config_hash), config_hash, verify)
        progress_file = out / (INDEX if dist.world == 1 else _RANK_INDEX.format(dist.rank))
        mine: dict[int, dict[str, Any]] = dict(done)  # this rank's finished shards: its progress index
        result = DatasetAttribution(out, {}, skipped=sorted(done), rank=dist.rank, world_size=dist.world)

        def attribute_batch(batch: _Batch, x: Any) -> dict[str, Tensor]:
            t = target(batch.data) if callable(target) else (_labels(batch.data) if target == "label" else target)
            if isinstance(t, Tensor):
                t = t.to(dev)
            res = attribute(
                model,
                _to_device(x, dev),
                target=t,
                composite=composite,
                overrides=overrides,
                output=output,
                strict=strict,
                memory_budget=memory_budget,
                **rule_params,
            )
            tensors = {f"relevance{k}": r for k, r in _leaves(res.relevance) if isinstance(r, Tensor)}
            if save_output:
                tensors["output"] = res.output
            classes = _explained_classes(t, res.output.detach().cpu(), batch.size)
            if classes is not None:
                tensors["target"] = classes
            tensors["sample"] = torch.arange(batch.first_sample, batch.first_sample + batch.size, dtype=torch.int64)
            return tensors

        def finish(writer: _ShardWriter, digest: Any) -> None:
            mine[writer.shard] = writer.write(plan.shard_key(writer.shard) or digest.hexdigest())
            _write_json(progress_file, _index_doc(config, config_hash, mine, complete=False))
            result.computed.append(writer.shard)

        start = time.perf_counter()
        bar = _progress_bar(progress, dist, plan.own_batches(set(done)))
        writer: _ShardWriter | None = None
        digest: Any = None
        rehashed: dict[int, Any] = {}  # finished shards a generic iterable made us load again: order check
        try:
            for batch in plan.batches(set(done)):
                shard = batch.number // batches_per_shard
                if plan.owner(shard) != dist.rank:
                    continue
                x = inputs_fn(batch.data)
                if shard in done:
                    _hash_inputs(rehashed.setdefault(shard, hashlib.sha256()), x)
                else:
                    if writer is None:
                        writer, digest = _ShardWriter(shard, out, config_hash), hashlib.sha256()
                    _hash_inputs(digest, x)
                    writer.add(batch, attribute_batch(batch, x))
                    result.samples_computed += batch.size
                    if batch.number % batches_per_shard == batches_per_shard - 1:
                        finish(writer, digest)
                        writer = None
                if bar is not None:
                    bar.update(1)
                    rate = result.samples_computed / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(samples_per_s=f"{rate:.1f}", refresh=False)
            if writer is not None:  # the loader ended inside a shard: the short last shard
                finish(writer, digest)
        finally:
            if bar is not None:
                bar.close()
        for shard, h in rehashed.items():
            if h.hexdigest() != done[shard].get("digest"):
                raise InputError(
                    f"the batches of shard {shard} differ from those of the run that computed it (order changed?); "
                    "use a new folder or overwrite=True"
                )
        result.seconds = time.perf_counter() - start
        totals = dist.gather((plan.total_batches, plan.total_samples))
        if len(set(totals)) != 1:
            raise InputError(f"the ranks saw different numbers of batches / samples: {totals}")
        shards = dist.gather(mine)
        if dist.rank == 0:
            merged = {k: v for part in shards for k, v in part.items()}
            _merge(out, config, config_hash, merged, -(-totals[0][0] // batches_per_shard), totals[0][1], dist.world)
        dist.barrier()  # the merged index is on disk for every rank
        result.index = _read_json(out / INDEX) or {}
        return result
    finally:
        dist.close()


def _clear(out: Path) -> None:
    if not out.is_dir():
        return
    for path in [*out.glob("shard-*.safetensors*"), *_index_files(out)]:
        path.unlink(missing_ok=True)


def _check_same_order(plan: _Plan, dist: _Dist) -> None:
    """With a map-style loader every rank drew its batch index lists: they must agree (no unseeded shuffling)."""
    if dist.world == 1 or plan.index_lists is None:
        return
    digest = hashlib.sha256(json.dumps(plan.index_lists).encode()).hexdigest()
    if len(set(dist.gather(digest))) != 1:
        raise InputError(
            "the data loader yields a different order on each rank (shuffle without a seeded generator?); "
            "use shuffle=False or generator=torch.Generator().manual_seed(...)"
        )


_SHARD_NAME = re.compile(r"^shard-(\d+)\.safetensors$")


def _finished_shards(
    out: Path, plan: _Plan, known: dict[int, list[dict]], config_hash: str, verify: bool
) -> dict[int, dict[str, Any]]:
    """This rank's shards whose files are intact, from the indexes or adopted from their headers. For a map-style
    loader also checks that each holds the same sample indices as the loader yields now."""
    ids = set(known)
    ids.update(int(m.group(1)) for p in out.iterdir() if (m := _SHARD_NAME.match(p.name)))
    done = {}
    for shard in sorted(i for i in ids if plan.owner(i) == plan.dist.rank):
        entry = _valid_entry(out, shard, known.get(shard, []), config_hash, verify)
        if entry is None:
            continue
        key = plan.shard_key(shard)
        if key is not None and entry.get("digest") != key:
            raise InputError(
                f"shard {shard} in {out} was computed on other samples than the loader yields now (order changed?); "
                "use a new folder or overwrite=True"
            )
        done[shard] = entry
    return done


def _merge(
    out: Path,
    config: dict,
    config_hash: str,
    shards: dict[int, dict[str, Any]],
    num_shards: int,
    num_samples: int,
    world: int,
) -> None:
    """Rank 0 at the end: one ``index.json`` from every rank's finished shards; per-rank files and leftovers go."""
    missing = [j for j in range(num_shards) if j not in shards or not (out / shards[j]["file"]).is_file()]
    shards = {j: e for j, e in shards.items() if j < num_shards and j not in missing}
    doc = _index_doc(
        config,
        config_hash,
        shards,
        complete=not missing,
        num_shards=num_shards,
        num_samples=num_samples,
        missing=missing,
        world_size=world,
        keys=sorted({k for e in shards.values() for k in e.get("keys", [])}),
    )
    _write_json(out / INDEX, doc)
    for path in out.glob(_RANK_INDEX.format("*")):
        path.unlink(missing_ok=True)
    for path in out.glob(f"*{_TMP}*"):  # temporary files of runs that died while writing
        path.unlink(missing_ok=True)


def _progress_bar(progress: bool | None, dist: _Dist, total: int | None) -> Any:
    enabled = dist.rank == 0 if progress is None else progress
    if not enabled:
        return None
    from tqdm.auto import tqdm

    desc = "attribute_dataset" + (f" rank {dist.rank}/{dist.world}" if dist.world > 1 else "")
    return tqdm(total=total, desc=desc, unit="batch", position=dist.rank if dist.world > 1 else None)


# ------------------------------------------------------------------------------------------------------- reading
def iter_shards(path: str | Path, keys: Sequence[str] | None = None) -> Iterator[dict[str, Tensor]]:
    """The shards of a finished ``attribute_dataset`` folder, one dict of tensors each, in sample order."""
    from safetensors.torch import load_file

    out = Path(path)
    index = _read_json(out / INDEX)
    if index is None:
        raise InputError(f"no {INDEX} in {out}: not an attribute_dataset folder (or it never finished a shard)")
    if not index.get("complete"):
        missing = index.get("missing")  # known once a run has seen the whole loader; a crashed run's index lacks it
        done = sorted(e["id"] for e in index.get("shards", []))
        what = f"missing shards {missing}" if missing else f"finished shards so far: {done or 'none'}"
        raise InputError(f"{out} is incomplete ({what}); rerun attribute_dataset with the same arguments to finish")
    for entry in index["shards"]:
        tensors = load_file(str(out / entry["file"]))
        yield tensors if keys is None else {k: tensors[k] for k in keys}


def load_relevance(path: str | Path, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Every shard of a finished ``attribute_dataset`` folder concatenated along the sample dimension:
    ``{"relevance": [N, ...], "output": [N, ...], "target": [N], "sample": [N]}`` (keys as stored)."""
    parts: dict[str, list[Tensor]] = {}
    for tensors in iter_shards(path, keys):
        for k, t in tensors.items():
            parts.setdefault(k, []).append(t)
    return {k: _cat_padded(v) for k, v in parts.items()}


def _cat_padded(parts: list[Tensor]) -> Tensor:
    """Concatenate along the samples; parts that differ beyond it (text batches padded each to its own longest
    sequence) are right-padded with zeros to the largest size first, as if the whole set had been padded at once:
    the relevance of a padding token is zero."""
    sizes = {tuple(t.shape[1:]) for t in parts}
    if len(sizes) <= 1:
        return torch.cat(parts)
    if len({len(size) for size in sizes}) != 1:
        raise InputError(f"batches with different numbers of dimensions cannot be stored together: {sorted(sizes)}")
    largest = [max(dims) for dims in zip(*sizes)]
    padded = []
    for t in parts:
        pad = [p for d in reversed(range(1, t.dim())) for p in (0, largest[d - 1] - t.shape[d])]
        padded.append(torch.nn.functional.pad(t, pad))
    return torch.cat(padded)
