"""Prediction core: top-k calibrated probabilities, a verdict (species, a flower of an unknown species, or not a
flower and what it looks like instead), a conformal prediction set, and Grad-CAM heatmaps.

Everything here is UI-free; the Gradio app and the CLI are thin adapters around :class:`FlowerClassifier`.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..core.artifact import ModelLoadError, ModelMetadata, load_artifact, quiet_torchscript
from .gradcam import contrast_maps, gradcam_maps
from .hub import ModelSource, parse_source, resolve_model_file
from ..core.combine import MAX_PHOTOS, PlantPhoto, combine
from ..core.decision import decide, decide_from_probabilities
from ..core.ranks import Answer
from .plant import PlantExplanation, PlantPrediction, read_photos
from ..core.verdict import Verdict
from ..core.gate import pooled_embedding, sharpness
from ..core.preprocess import ImageSource, eval_transform, load_image, view_transform



@dataclass(frozen=True)
class Prediction:
    top_k: tuple  # ((label, probability), ...), most likely first
    class_indices: tuple
    verdict: Verdict | None = None  # None when the model ships no verdict rule
    prediction_set: tuple = ()  # labels that hold the true species at the model's stated level (species verdicts)
    looks_like: str | None = None  # the ImageNet view's name for what a not_a_flower photo shows
    ood_score: float | None = None  # log-odds of "not a flower" (higher means less flower-like)
    answer: Answer | None = None  # the deepest taxon sure enough (core.ranks); None: not computed
    taxa: tuple = ()  # per top_k entry, its Taxon (core.taxonomy) where the model carries a taxonomy
    group: int | None = None  # the photo group its rules were applied for (core.ranks.PhotoGroups)

    def __post_init__(self) -> None:
        if self.verdict is not None and not isinstance(self.verdict, Verdict):
            object.__setattr__(self, "verdict", Verdict(self.verdict))  # a stored value (the JSON word) becomes the type

    @property
    def label(self) -> str:
        return self.top_k[0][0]

    @property
    def confidence(self) -> float:
        return self.top_k[0][1]

    @property
    def is_flower(self) -> bool | None:
        return None if self.verdict is None else self.verdict.is_flower

    def to_dict(self) -> dict:
        return {"top_k": [self._entry(rank) for rank in range(len(self.top_k))],
                "verdict": None if self.verdict is None else self.verdict.value, "is_flower": self.is_flower,
                "prediction_set": list(self.prediction_set), "looks_like": self.looks_like,
                "ood_score": None if self.ood_score is None else round(self.ood_score, 6),
                "answer": None if self.answer is None else self.answer.to_dict()}

    def _entry(self, rank: int) -> dict:
        label, probability = self.top_k[rank]
        entry = {"label": label, "prob": round(probability, 6)}
        if self.taxa:
            taxon = self.taxa[rank]
            entry.update(common_name=taxon.common_name, scientific_name=taxon.scientific_name, genus=taxon.genus,
                         family=taxon.family)
        return entry


# Top two within this calibrated probability of each other count as "close": worth a "why A and not B" map.
CLOSE_CALL = 0.25


@dataclass(frozen=True)
class Explanation:
    prediction: Prediction
    view: Image.Image  # the center crop the model saw, in RGB
    heatmaps: np.ndarray  # [K, h, w] in [0, 1], one per top class
    contrast: np.ndarray | None = None  # [h, w]: where the evidence for the top class over the second lies
    contrast_pair: tuple | None = None  # (top name, second name) when ``contrast`` is given


def wants_contrast(prediction: Prediction) -> bool:
    """A named species that is "one of" several, or whose runner-up is close: show why the first, not the second."""
    if prediction.verdict not in (None, Verdict.SPECIES) or len(prediction.top_k) < 2:
        return False
    return len(prediction.prediction_set) > 1 or prediction.top_k[0][1] - prediction.top_k[1][1] < CLOSE_CALL


SERVED_METHODS = ("features", "head", "imagenet_logits")


def optimized_for_inference(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The network frozen with BatchNorm folded into the convolutions (``torch.jit.freeze`` then
    ``optimize_for_inference``): on a 2-core CPU about a third faster per photo, outputs equal to ~1e-5, and
    Grad-CAM's gradient through ``head`` still flows. A network that cannot be frozen is served as it is."""
    methods = [name for name in SERVED_METHODS if hasattr(module, name)]
    try:
        with quiet_torchscript():
            frozen = torch.jit.freeze(module.eval(), preserved_attrs=methods)
            return torch.jit.optimize_for_inference(frozen, other_methods=methods)
    except RuntimeError:  # TorchScript refuses some graphs (e.g. attributes it cannot inline): keep the original
        return module


class FlowerClassifier:
    def __init__(self, module: torch.jit.ScriptModule, metadata: ModelMetadata, source: str = "",
                 optimize: bool = True, parallel_views: bool | None = None):
        """``parallel_views``: run the ImageNet view on a second thread beside the species network when no other
        request is running. None (the default) does so when torch uses fewer threads than there are cores, as the
        app does (one per request)."""
        self.metadata = metadata
        self.source = source
        self.model_file: str | None = None  # the local model.pt it came from (set by load), for its SHA-256
        self.transform = eval_transform(metadata.preprocess)
        self.view_transform = view_transform(metadata.preprocess)
        bank = getattr(module, "ood_bank", None)
        self.ood_bank = bank.float() if isinstance(bank, torch.Tensor) and bank.numel() else None
        labels = getattr(module, "ood_bank_labels", None)
        self.ood_bank_labels = labels.long().numpy() if isinstance(labels, torch.Tensor) and labels.numel() else None
        if metadata.gate is not None and self.ood_bank is None:
            raise ModelLoadError("the model's verdict rule needs its k-NN feature bank, and model.pt holds none; "
                                 "re-export it with flowerdemo.training.export")
        # After reading the bank: freezing inlines buffers as constants.
        self.module = optimized_for_inference(module) if optimize else module
        self.parallel_views = parallel_views
        self._view_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._running = 0  # requests inside _networks right now

    @classmethod
    def load(cls, source: str | None = None, revision: str | None = None, sha256: str | None = None,
             parallel_views: bool | None = None) -> "FlowerClassifier":
        """Load from a local path, ``hf://owner/repo@rev``, ``owner/repo``, ``FLOWERDEMO_MODEL`` or the bundled model."""
        parsed: ModelSource = parse_source(source, revision)
        model_file = resolve_model_file(parsed, sha256)
        module, metadata = load_artifact(model_file)
        classifier = cls(module, metadata, parsed.describe(), parallel_views=parallel_views)
        classifier.model_file = model_file
        return classifier

    @property
    def class_names(self) -> tuple:
        return self.metadata.class_names

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        return self.transform(load_image(image))

    def predict(self, image: ImageSource, top_k: int = 5) -> Prediction:
        return self.predict_batch([image], top_k)[0]

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[ImageSource], top_k: int = 5) -> list[Prediction]:
        batch = torch.stack([self.preprocess(image) for image in images])
        features, imagenet = self._networks(batch)
        return self._predictions(features, self.module.head(features), imagenet, top_k, sharpness(batch))

    def _networks(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(species feature map, ImageNet view's logits or None when the model has no verdict rule).

        The two networks do not depend on each other. With one torch thread per request (the app's setting on
        2 cores), a request that runs alone hands the ImageNet view to a second thread and so uses both cores
        (``benchmarks/bench_model.py --threads 1 --parallel-views``). While another request is in its forward
        passes, both cores are busy already and the second thread only slowed the server down
        (``benchmarks/load_test.py``), so then the two run one after the other.
        """
        if self.metadata.gate is None:
            return self.module.features(batch), None
        with self._pool_lock:
            self._running += 1
            alone = self._running == 1
        try:
            if not (alone and self._use_parallel_views()):
                return self.module.features(batch), self.module.imagenet_logits(batch)
            imagenet = self._pool().submit(self._imagenet_logits, batch)
            features = self.module.features(batch)
            return features, imagenet.result()
        finally:
            with self._pool_lock:
                self._running -= 1

    def _imagenet_logits(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # thread-local: the worker thread needs its own
            return self.module.imagenet_logits(batch)

    def _use_parallel_views(self) -> bool:
        if self.parallel_views is not None:
            return self.parallel_views
        return torch.get_num_threads() < (os.cpu_count() or 1)

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._view_pool is None:
                self._view_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowerdemo-imagenet-view")
            return self._view_pool

    def explain(self, image: ImageSource, top_k: int = 5, cam_classes: int = 3) -> Explanation:
        """Prediction plus Grad-CAM heatmaps for the ``cam_classes`` most likely classes."""
        picture = load_image(image)
        with torch.inference_mode():
            batch = self.transform(picture).unsqueeze(0)
            features, imagenet = self._networks(batch)
            prediction = self._predictions(features, self.module.head(features), imagenet, top_k, sharpness(batch))[0]
        # Gradients are needed only through the small head, so the feature map is computed once, gradient-free.
        heatmaps = gradcam_maps(self.module.head, features.clone(), prediction.class_indices[:cam_classes])
        contrast, pair = None, None
        if wants_contrast(prediction):
            first, second = prediction.class_indices[:2]
            contrast = contrast_maps(self.module.head, features.clone(), [(first, second)])[0]
            pair = (prediction.top_k[0][0], prediction.top_k[1][0])
        return Explanation(prediction, self.view_transform(picture), heatmaps, contrast, pair)

    def _predictions(self, features: torch.Tensor, logits: torch.Tensor, imagenet: torch.Tensor | None,
                     top_k: int, input_sharpness: np.ndarray | None = None) -> list[Prediction]:
        return self._from_decisions(self._decide(features, logits, imagenet, input_sharpness), top_k)

    def _decide(self, features, logits, imagenet, input_sharpness=None):
        return decide(self.metadata, logits.float().numpy(), pooled_embedding(features).numpy(),
                      None if imagenet is None else imagenet.float().numpy(), input_sharpness, self.ood_bank)

    def _from_decisions(self, decided, top_k: int, looks_like: Sequence | None = None) -> list[Prediction]:
        """Predictions from core.decision's Decisions; ``looks_like`` per row overrides the ImageNet view's name
        (a plant's answer has no ImageNet view of its own) and leaves out the "not a flower" score."""
        if not 1 <= top_k:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        meta = self.metadata
        probabilities = torch.as_tensor(decided.probabilities)
        values, indices = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        scores = decided.scores
        results = []
        for row, (row_values, row_indices) in enumerate(zip(values.tolist(), indices.tolist())):
            verdict = decided.verdicts[row]
            in_set = decided.sets[row] if decided.sets[row] is not None else row_indices[:1]
            if looks_like is not None:
                seen_as, ood_score = looks_like[row], None
            else:
                seen_as = meta.imagenet_class_names[scores.imagenet_top[row]] if verdict is Verdict.NOT_A_FLOWER else None
                ood_score = None if scores is None else float(scores.combined[row])
            results.append(Prediction(
                top_k=tuple((self.class_names[i], float(p)) for i, p in zip(row_indices, row_values)),
                class_indices=tuple(row_indices),
                verdict=verdict,
                prediction_set=tuple(self.class_names[i] for i in in_set) if _has_set(verdict) else (),
                looks_like=seen_as,
                ood_score=ood_score,
                answer=decided.answers[row],
                taxa=tuple(meta.taxonomy.taxa[i] for i in row_indices) if meta.taxonomy is not None else (),
                group=None if meta.photo_groups is None else int(decided.groups[row]),
            ))
        return results

    # ------------------------------------------------------------------------------- several photos, one plant

    def predict_plant(self, images: Sequence[ImageSource], names: Sequence[str] | None = None,
                      top_k: int = 5) -> PlantPrediction:
        """One answer for one to five photos of the same plant (``core.combine`` has the rule): unreadable,
        repeated and non-flower photos are left out and named. ``names``: how each photo is reported (default:
        its file name). Raises EmptyPlantError when no photo can be used, ValueError for more than five."""
        return self._plant(images, names, top_k, explain=False)

    def explain_plant(self, images: Sequence[ImageSource], names: Sequence[str] | None = None,
                      top_k: int = 5) -> PlantExplanation:
        """:meth:`predict_plant` plus, for each photo it combines, the view the model saw and a Grad-CAM map of
        the plant's top class in that photo."""
        return self._plant(images, names, top_k, explain=True)

    def _plant(self, images, names, top_k: int, explain: bool):
        if len(images) > MAX_PHOTOS:
            raise ValueError(f"at most {MAX_PHOTOS} photos of one plant, got {len(images)}")
        read = read_photos(images, names)
        first = {}  # digest -> index of its first photo: each distinct photo runs through the network once
        for index, photo in enumerate(read):
            if photo.picture is not None:
                first.setdefault(photo.digest, index)
        distinct = sorted(first.values())
        predictions, decided, features = {}, None, None
        if distinct:
            with torch.inference_mode():
                batch = torch.stack([self.transform(read[i].picture) for i in distinct])
                features, imagenet = self._networks(batch)
                decided = self._decide(features, self.module.head(features), imagenet, sharpness(batch))
            predictions = dict(zip(distinct, self._from_decisions(decided, top_k)))
        row_of = {index: row for row, index in enumerate(distinct)}
        source = [None if p.picture is None else first[p.digest] for p in read]  # each photo's first copy
        combined = combine([PlantPhoto(p.name, error=p.error) if s is None else
                            PlantPhoto(p.name, decided.probabilities[row_of[s]], decided.verdicts[row_of[s]],
                                       int(decided.groups[row_of[s]]), p.digest)
                            for p, s in zip(read, source)])
        if len(combined.used) == 1:
            answer = predictions[combined.used[0]]  # one usable photo: exactly its own answer
        else:
            carrier = predictions[combined.carried_by]
            together = decide_from_probabilities(self.metadata, combined.probabilities[None], [combined.verdict],
                                                 [combined.group])
            looks_like = carrier.looks_like if combined.verdict is Verdict.NOT_A_FLOWER else None
            answer = self._from_decisions(together, top_k, looks_like=[looks_like])[0]
        plant = PlantPrediction(answer, tuple(p.name for p in read),
                                tuple(None if s is None else predictions[s] for s in source), combined.used,
                                combined.left_out, combined.carried_by, combined.temperature)
        if not explain:
            return plant
        top = int(np.argmax(combined.probabilities))
        maps = [gradcam_maps(self.module.head, features[row_of[i]:row_of[i] + 1].clone(), [top])[0]
                for i in combined.used]
        return PlantExplanation(plant, tuple(self.view_transform(read[i].picture) for i in combined.used),
                                np.stack(maps), tuple(float(decided.probabilities[row_of[i], top])
                                                      for i in combined.used), read[combined.carried_by].picture)


def _has_set(verdict: Verdict | None) -> bool:
    """A model without a verdict rule still gets its sets (or its top class); see :attr:`Verdict.has_prediction_set`."""
    return verdict is None or verdict.has_prediction_set
