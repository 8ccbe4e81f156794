"""Running a protocol's cases over one pass of the data, with a per-modality feature cache.

Cached path (methods with a separable encoder): for each batch, every modality any case needs
is normalised and encoded once; each case decodes from those features. A corrupted case
re-encodes only its corrupted modality. Uncached path (``feature_cache=False``, and always for
methods that fuse early): every case runs its own forward over the data.

Both paths see the same batches and run the same per-modality ``encode`` calls on the same
inputs, so their predictions are bit-identical; the cache only removes repeated work. Each case's
condition (a weather or sensor failure) selects the samples whose pixels count; decoding always
runs on the whole batch so batch composition never changes the numbers.

Besides the confusion matrix, every case keeps per-sample counts (true positives, false positives
and false negatives per class for each scored sample, in data-set order): the statistics layer
(:mod:`mlebench.stats`) computes intervals and paired differences from them.

Under ``torch.distributed`` each rank evaluates a disjoint shard (no padding, so no sample counts
twice), the confusion matrices are summed across ranks and the per-sample counts gathered and put
back in data-set order.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mlebench.corruptions import Corruption, corrupt_batch
from mlebench.data.transforms import normalize_modality
from mlebench.distributed import gather_objects, is_distributed, world_size
from mlebench.distributed import rank as process_rank
from mlebench.metrics import ConfusionMatrix, per_sample_counts, predict_labels
from mlebench.method import SegmentationMethod
from mlebench.protocols.base import ALL, CaseResult, EvalCase


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint shards that cover every sample once."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class EvalProfile:
    """Where an evaluation's time goes (filled by ``evaluate_cases(profile=...)``).

    ``encoder_passes``: images through one modality's encoder (a batch of B images of one
    modality counts B); ``forward_passes``: images through a whole network (methods that fuse
    early, whose ``encode`` is only a check). ``encode_s`` and ``decode_s`` time those calls (a
    whole forward counts as decoding); ``total_s`` the whole evaluation, so the rest (loading,
    resizing, normalising, corrupting, metrics) is ``total_s - encode_s - decode_s``.
    """

    encoder_passes: int = 0
    forward_passes: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    samples: int = 0
    device: str = "cpu"

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)
        sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            sync()
            setattr(self, f"{part}_s", getattr(self, f"{part}_s") + time.perf_counter() - start)

    @property
    def other_s(self) -> float:
        return self.total_s - self.encode_s - self.decode_s


def _timed(profile: EvalProfile | None, part: str) -> Any:
    return profile.timing(part) if profile is not None else contextlib.nullcontext()


def _condition_mask(meta: Mapping[str, Sequence[str]], condition: str, n: int) -> torch.Tensor:
    if condition == ALL:
        return torch.ones(n, dtype=torch.bool)
    hits = [any(values[i] == condition for values in meta.values() if isinstance(values, (list, tuple)))
            for i in range(n)]
    return torch.tensor(hits, dtype=torch.bool)


class _CaseInputs:
    """Normalised (and corrupted) inputs and their features for one batch, computed lazily."""

    def __init__(self, method: SegmentationMethod, batch: dict[str, Any], device: torch.device, base_seed: int,
                 profile: EvalProfile | None = None) -> None:
        self.method, self.batch, self.device, self.base_seed = method, batch, device, base_seed
        self.profile = profile
        h, w = batch["label"].shape[-2:]
        m = method.size_multiple
        self.pad = ((-h) % m, (-w) % m)
        self._inputs: dict[tuple[str, str], torch.Tensor] = {}
        self._features: dict[tuple[str, str], Any] = {}

    def input(self, modality: str, corruption: Corruption | None) -> torch.Tensor:
        key = (modality, corruption.name if corruption is not None and corruption.modality == modality else "")
        if key not in self._inputs:
            raw = self.batch[modality]
            if key[1]:
                raw = corrupt_batch({modality: raw, "meta": self.batch["meta"]}, [corruption], self.base_seed)[modality]
            spec = self.method.info.modality(modality)
            x = normalize_modality(raw.to(self.device), spec)
            # Zero padding (after normalisation) to the method's size multiple; the logits are
            # cropped back before scoring.
            self._inputs[key] = F.pad(x, (0, self.pad[1], 0, self.pad[0]))
        return self._inputs[key]

    def features(self, modality: str, corruption: Corruption | None) -> Any:
        key = (modality, corruption.name if corruption is not None and corruption.modality == modality else "")
        if key not in self._features:
            x = self.input(modality, corruption)
            self._features[key] = self.encode(modality, x)
        return self._features[key]

    def encode(self, modality: str, x: torch.Tensor) -> Any:
        with _timed(self.profile, "encode"):
            features = self.method.encode(modality, x)
        if self.profile is not None:
            self.profile.encoder_passes += x.shape[0]
        return features

    def zeros_features(self, modality: str) -> Any:
        """Features of an all-zero (normalised) input, for methods that cannot drop a modality."""
        key = (modality, "zeros")
        if key not in self._features:
            b, c, h, w = self.batch[modality].shape
            zero = torch.zeros((b, c, h + self.pad[0], w + self.pad[1]), dtype=torch.float32, device=self.device)
            self._features[key] = self.encode(modality, zero)
        return self._features[key]


def _case_features(method: SegmentationMethod, cache: _CaseInputs, case: EvalCase) -> dict[str, Any]:
    feats = {m: cache.features(m, case.corruption) for m in case.test_modalities}
    if not method.supports_missing_modalities:
        for m in method.modalities:
            feats.setdefault(m, cache.zeros_features(m))
    return feats


def _case_forward(method: SegmentationMethod, cache: _CaseInputs, case: EvalCase) -> Any:
    """One plain forward for the case (no reuse across cases)."""
    inputs = {m: cache.input(m, case.corruption) for m in case.test_modalities}
    names = list(case.test_modalities)
    if not method.supports_missing_modalities:
        for m in method.modalities:
            if m not in inputs:
                inputs[m] = torch.zeros_like(next(iter(inputs.values())))
        names = list(method.modalities)
    if method.separable_encoder:
        size = tuple(next(iter(inputs.values())).shape[-2:])
        features = {m: cache.encode(m, inputs[m]) for m in names}
        with _timed(cache.profile, "decode"):
            return method.decode(features, size)
    with _timed(cache.profile, "decode"):
        output = method(inputs, names)
    if cache.profile is not None:
        cache.profile.forward_passes += next(iter(inputs.values())).shape[0]
    return output


class PixelSampler:
    """Keeps, per class, the ``n`` pixels with the smallest seeded random keys: a uniform
    sample that is the same whatever the batch size, order or number of ranks."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.keys: dict[int, torch.Tensor] = {}
        self.feats: dict[int, torch.Tensor] = {}
        self.seen: dict[int, int] = defaultdict(int)

    def add(self, embedding: torch.Tensor, target: torch.Tensor, ids: Sequence[str], ignore: int) -> None:
        from mlebench.corruptions import stable_seed

        b, c, h, w = embedding.shape
        labels = torch.nn.functional.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        feats = embedding.permute(0, 2, 3, 1).reshape(b, h * w, c).float().cpu()
        labels = labels.reshape(b, h * w).cpu()
        for i, sample_id in enumerate(ids):
            g = torch.Generator().manual_seed(stable_seed("mlebench-tsne-v1", self.seed, sample_id))
            keys = torch.rand(h * w, generator=g)
            for cls in labels[i].unique().tolist():
                if cls == ignore:
                    continue
                sel = labels[i] == cls
                self.seen[cls] += int(sel.sum())
                k = torch.cat([self.keys.get(cls, keys[:0]), keys[sel]])
                f = torch.cat([self.feats.get(cls, feats[i, :0]), feats[i][sel]])
                keep = k.argsort()[: self.n]
                self.keys[cls], self.feats[cls] = k[keep], f[keep]

    def result(self) -> dict[int, Any]:
        if is_distributed():
            gathered = gather_objects((self.keys, self.feats, dict(self.seen)))
            merged = PixelSampler(self.n, self.seed)
            for keys, feats, seen in gathered:
                for cls in keys:
                    k = torch.cat([merged.keys.get(cls, keys[cls][:0]), keys[cls]])
                    f = torch.cat([merged.feats.get(cls, feats[cls][:0]), feats[cls]])
                    keep = k.argsort()[: self.n]
                    merged.keys[cls], merged.feats[cls] = k[keep], f[keep]
                    merged.seen[cls] += seen[cls]
            return merged.result_local()
        return self.result_local()

    def result_local(self) -> dict[int, Any]:
        return {cls: (self.feats[cls].numpy(), self.seen[cls]) for cls in sorted(self.feats)}


def resize_batch(batch: dict[str, Any], short_side: int) -> dict[str, Any]:
    """Resize a raw batch so its short side is ``short_side`` (label with nearest)."""
    h, w = batch["label"].shape[-2:]
    scale = short_side / min(h, w)
    size = (round(h * scale), round(w * scale))
    if size == (h, w):
        return batch
    out = dict(batch)
    for key, value in batch.items():
        if key == "label":
            out[key] = F.interpolate(value[:, None].float(), size=size, mode="nearest")[:, 0].long()
        elif isinstance(value, torch.Tensor) and value.ndim == 4:
            out[key] = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
    return out


def missing_policy(method: SegmentationMethod) -> str:
    """How a missing modality is handled for this method (recorded with the results)."""
    return "drop" if method.supports_missing_modalities else "zero-fill"


@torch.no_grad()
def evaluate_cases(
    method: SegmentationMethod,
    dataset: Any,
    cases: Sequence[EvalCase],
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    feature_cache: bool = True,
    base_seed: int = 0,
    num_workers: int = 0,
    progress: bool = False,
    collect_pixels: int = 0,
    eval_size: int | None = None,
    keep_predictions: Sequence[EvalCase] = (),
    n_predictions: int = 3,
    amp: bool = False,
    profile: EvalProfile | None = None,
) -> list[CaseResult]:
    """Confusion-matrix metrics for every case, in the order given.

    With ``collect_pixels > 0``, also a uniform sample of that many fused-embedding pixels per
    class and case (for t-SNE), chosen by seeded random keys so that the sample does not depend
    on batching or the number of processes.

    With ``eval_size``, every sample is resized to that short side first (modalities bilinear,
    label nearest), as the DELIVER reference evaluates at 1024. Inputs are zero-padded to the
    method's ``size_multiple`` and the logits cropped back.

    For the cases in ``keep_predictions``, the predicted label maps of the first
    ``n_predictions`` scored samples (in data-set order) are returned too, for qualitative
    figures.

    ``num_workers`` data-loading processes (kept alive across the passes); ``amp``: encode and
    decode under bf16 autocast (metrics in full precision); ``profile``: where the time goes.
    """
    device = torch.device(device)
    method.to(device).eval()
    for case in cases:
        method.check_subset(case.test_modalities)
    distributed = is_distributed()
    rank, world = process_rank(), world_size()
    sampler = ShardSampler(len(dataset), rank, world)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")
    info = dataset.info
    matrices = {c: ConfusionMatrix(method.num_classes, info.ignore_index, device) for c in cases}
    counts: dict[EvalCase, int] = defaultdict(int)
    # per case: (data-set index, sample id, (3, K) counts, scene or None) of every scored sample
    per_sample: dict[EvalCase, list[tuple[int, str, np.ndarray, str | None]]] = defaultdict(list)
    kept: dict[EvalCase, list[tuple[int, str, np.ndarray]]] = defaultdict(list)
    samplers = {c: PixelSampler(collect_pixels, base_seed) for c in cases} if collect_pixels else {}
    use_cache = feature_cache and method.separable_encoder
    started = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    passes = [list(cases)] if use_cache else [[c] for c in cases]  # uncached: one pass per case
    bar = tqdm(total=len(passes) * len(loader), disable=not progress, desc="eval", unit="batch")
    for pass_cases in passes:
        position = 0
        for batch in loader:
            indices = sampler.indices[position : position + len(batch["label"])]
            position += len(indices)
            if eval_size is not None:
                batch = resize_batch(batch, eval_size)
            target = batch["label"].to(device)
            height, width = target.shape[-2:]
            cache = _CaseInputs(method, batch, device, base_seed, profile)
            size = (height + cache.pad[0], width + cache.pad[1])
            for case in pass_cases:
                mask = _condition_mask(batch["meta"], case.condition, target.shape[0]).to(device)
                n = int(mask.sum())
                if n == 0:
                    continue
                with autocast:
                    if use_cache:
                        features = _case_features(method, cache, case)
                        with _timed(profile, "decode"):
                            output = method.decode(features, size)
                    else:
                        output = _case_forward(method, cache, case)
                prediction = predict_labels(output.logits)[..., :height, :width]
                matrices[case].update(prediction[mask], target[mask], validate=False)
                counts[case] += n
                sample_counts = per_sample_counts(prediction[mask], target[mask], method.num_classes,
                                                  info.ignore_index).cpu().numpy()
                scenes = batch["meta"].get("scene") or [None] * len(indices)
                scored = [(i, sid) for i, sid, keep in zip(indices, batch["meta"]["id"], mask.tolist()) if keep]
                kept_scenes = [scene for scene, keep in zip(scenes, mask.tolist()) if keep]
                per_sample[case] += [(i, sid, c, scene) for (i, sid), c, scene in zip(scored, sample_counts, kept_scenes)]
                if case in keep_predictions and len(kept[case]) < n_predictions:
                    labels = prediction[mask].to(torch.uint8).cpu().numpy()
                    kept[case] += [(i, sid, p) for (i, sid), p in zip(scored, labels)][: n_predictions - len(kept[case])]
                if case in samplers:
                    ids = [i for i, keep in zip(batch["meta"]["id"], mask.tolist()) if keep]
                    padded = F.pad(target, (0, cache.pad[1], 0, cache.pad[0]), value=info.ignore_index)
                    samplers[case].add(output.embedding[mask], padded[mask], ids, info.ignore_index)
            bar.update(1)
    bar.close()
    if profile is not None:
        profile.samples += len(sampler)
        profile.total_s += time.perf_counter() - started
    results = []
    for case in cases:
        cm = matrices[case].all_reduce()
        samples = torch.tensor(counts[case], device=device)
        if distributed:
            dist.all_reduce(samples)
        convention = info.miou_convention
        scored = _gather_sorted(per_sample[case], distributed)
        scenes = [scene for *_, scene in scored]
        nothing = int(samples) == 0  # a condition absent from the split: undefined, never 0
        results.append(
            CaseResult(
                case=case,
                miou=math.nan if nothing else cm.miou(convention),
                pixel_accuracy=cm.pixel_accuracy(),
                mean_f1=math.nan if nothing else cm.mean_f1(convention),
                iou=cm.iou().tolist(),
                samples=int(samples),
                pixels=samplers[case].result() if case in samplers else None,
                sample_ids=[sid for _, sid, *_ in scored],
                scenes=scenes if scored and None not in scenes else None,
                predictions=([(sid, p) for _, sid, p in _gather_sorted(kept[case], distributed)[:n_predictions]]
                             if case in keep_predictions else None),
                counts=(np.stack([c for _, _, c, _ in scored]) if scored
                        else np.zeros((0, 3, method.num_classes), dtype=np.int64)),
            )
        )
    return results


def _gather_sorted(items: list[tuple], distributed: bool) -> list[tuple]:
    """All ranks' per-sample records, in data-set order (as one process would have them)."""
    if distributed:
        items = [item for part in gather_objects(items) for item in part]
    return sorted(items, key=lambda item: item[0])
