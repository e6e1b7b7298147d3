"""Object search: segment what the user clicked, embed just that object, search the library.

Coordinates. The user points at the photo as it is displayed: upright (EXIF
orientation applied) and at full resolution. SAM sees a working copy whose long side
is at most ``WORK_SIDE`` (it resizes to 1024 internally anyway), so points and boxes
are scaled in, and masks come back in the working grid; :meth:`Segmentation.full_mask`
scales a mask back out to the photo's own pixels.

Embedding an object. The mask's bounding box, with a margin for context, is cropped,
and every pixel outside the mask is replaced by one flat colour, the mean of those
pixels: the object is seen on a neutral field rather than with its neighbours (a
blue star next to a red circle must find blue stars), yet on the tone of its own
scene, which keeps the crop looking like a photo to the model. A region (a box
without a mask) is cropped as it is.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.errors import QueryError
from indexer.ingest.decode import open_photo, to_model_input
from indexer.models.embedder import Embedder
from indexer.search.query import Query
from indexer.search.service import SearchResult, SearchService
from indexer.segment.sam import Prediction, Segmenter
from store.library import LibraryStore

log = logging.getLogger(__name__)

WORK_SIDE = 1024
MARGIN = 0.5  # of the box size, on each side: the object fills about half the crop, as in most photos


@dataclass(frozen=True)
class WorkingPhoto:
    """A photo prepared for segmentation."""

    path: str
    key: str  # identifies the pixels: content hash when indexed, else path + size + mtime
    pixels: np.ndarray  # (h, w, 3) uint8, upright, long side <= WORK_SIDE
    size: tuple[int, int]  # (width, height) of the upright photo at full resolution
    image_id: int | None  # when the photo is in the library

    @property
    def scale(self) -> float:
        """Working pixels per photo pixel."""
        return self.pixels.shape[1] / self.size[0]


@dataclass(frozen=True)
class Segmentation:
    photo: WorkingPhoto
    prediction: Prediction

    @property
    def masks(self) -> np.ndarray:
        return self.prediction.masks

    @property
    def scores(self) -> np.ndarray:
        return self.prediction.scores

    def full_mask(self, index: int = 0) -> np.ndarray:
        """Mask ``index`` at the photo's full resolution (bool, (H, W))."""
        w, h = self.photo.size
        img = Image.fromarray(self.masks[index].astype(np.uint8) * 255)
        return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)) > 127


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive end, of a mask's pixels; None for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _expand(box: tuple[int, int, int, int], shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    mx, my = round((x1 - x0) * margin), round((y1 - y0) * margin)
    h, w = shape
    return max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)


def object_crop(
    pixels: np.ndarray, mask: np.ndarray | None, box: tuple[int, int, int, int] | None = None, margin: float = MARGIN
) -> np.ndarray:
    """The object (mask) or region (box) cut out with a margin; outside a mask becomes neutral."""
    if mask is not None:
        found = mask_box(mask)
        if found is None:
            raise QueryError("The selection is empty: click on the object itself.")
        box = found
    if box is None:
        raise ValueError("give a mask or a box")
    x0, y0, x1, y1 = _expand(box, pixels.shape[:2], margin)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise QueryError("The selected region is too small to search for.")
    crop = pixels[y0:y1, x0:x1].copy()
    if mask is not None:
        outside = ~mask[y0:y1, x0:x1]
        if outside.any():
            # A flat field of the surroundings' mean colour: the neighbours' shapes are gone,
            # the scene's tone stays (a grey card would look like a different photo).
            crop[outside] = crop[outside].reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    return crop


def cutout(pixels: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The object on a transparent background, cropped to the mask (for "Save cut-out")."""
    box = mask_box(mask)
    if box is None:
        raise QueryError("The selection is empty.")
    rgba = np.dstack([pixels, mask.astype(np.uint8) * 255])
    x0, y0, x1, y1 = box
    return Image.fromarray(rgba[y0:y1, x0:x1], "RGBA")


class ObjectSearch:
    """Segment, embed and search one photo's objects. Thread-safe; the segmenter loads on first use."""

    def __init__(
        self,
        store: LibraryStore,
        search: SearchService,
        segmenter: Callable[[], Segmenter],
        photos_cached: int = 4,
    ) -> None:
        self.store = store
        self.search_service = search
        self._segmenter = segmenter
        self._photos: OrderedDict[str, WorkingPhoto] = OrderedDict()
        self._photos_cached = photos_cached
        self._lock = threading.RLock()

    @property
    def embedder(self) -> Embedder:
        """The model that answers searches now (crops must be embedded in the same space)."""
        return self.search_service.embedder

    @property
    def segmenter(self) -> Segmenter:
        return self._segmenter()

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Load the segmenter now (downloading its weights on first use, reporting bytes to ``progress``)."""
        load = getattr(self.segmenter, "load", None)
        if load is not None:
            load(progress)

    def photo(self, path: str | Path) -> WorkingPhoto:
        """The upright working copy of a photo (cached for the next clicks)."""
        resolved = Path(path).expanduser().resolve()
        stat = resolved.stat()
        rec = self.store.image_by_path(str(resolved))
        key = (
            rec.content_hash
            if rec is not None and rec.content_hash and rec.size == stat.st_size and rec.mtime_ns == stat.st_mtime_ns
            else f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"
        )
        with self._lock:
            cached = self._photos.get(key)
            if cached is not None:
                self._photos.move_to_end(key)
                return cached
        img, meta = open_photo(resolved, WORK_SIDE)
        if max(img.size) > WORK_SIDE:
            img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR)
        photo = WorkingPhoto(str(resolved), key, np.asarray(img, np.uint8), (meta.width, meta.height),
                             rec.id if rec is not None else None)  # fmt: skip
        with self._lock:
            self._photos[key] = photo
            while len(self._photos) > self._photos_cached:
                self._photos.popitem(last=False)
        return photo

    def full_pixels(self, photo: WorkingPhoto) -> np.ndarray:
        """The photo upright at full resolution (for exporting a cut-out at its real size)."""
        img, _ = open_photo(photo.path, max(photo.size))
        return np.asarray(img, np.uint8)

    def segment(
        self,
        path: str | Path,
        points: Sequence[tuple[float, float]] = (),
        labels: Sequence[int] = (),
        box: tuple[float, float, float, float] | None = None,
    ) -> Segmentation:
        """Candidate masks for clicks (photo pixels; label 1 object, 0 not) and/or a box."""
        if not points and box is None:
            raise QueryError("Click on an object (or drag a box around it) first.")
        if len(points) != len(labels):
            raise ValueError("one label per point")
        photo = self.photo(path)
        s = photo.scale
        pts = np.asarray(points, np.float32).reshape(-1, 2) * s if points else None
        lbl = np.asarray(labels, np.int64) if points else None
        bx = np.asarray(box, np.float32) * s if box is not None else None
        with self._lock:  # set_image + predict must not interleave between two callers
            segmenter = self.segmenter
            segmenter.set_image(photo.pixels, photo.key)
            prediction = segmenter.predict(pts, lbl, bx)
        return Segmentation(photo, prediction)

    def embed(
        self, photo: WorkingPhoto, mask: np.ndarray | None, box: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        crop = object_crop(photo.pixels, mask, box)
        model_input = to_model_input(Image.fromarray(crop), self.embedder.preprocess)
        return self.embedder.embed_images(model_input[None])[0]

    def search_object(
        self,
        segmentation: Segmentation,
        mask_index: int = 0,
        k: int = 20,
        folders: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        without_tags: Sequence[str] = (),
    ) -> list[SearchResult]:
        """Photos showing the segmented object (the photo it came from is left out)."""
        vector = self.embed(segmentation.photo, segmentation.masks[mask_index])
        return self._search(vector, segmentation.photo, k, folders, tags, without_tags)

    def search_region(
        self,
        path: str | Path,
        box: tuple[float, float, float, float],
        k: int = 20,
        folders: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        without_tags: Sequence[str] = (),
    ) -> list[SearchResult]:
        """Photos like a rectangle of a photo (box in photo pixels)."""
        photo = self.photo(path)
        s = photo.scale
        x0, y0, x1, y1 = (round(v * s) for v in box)
        vector = self.embed(photo, None, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        return self._search(vector, photo, k, folders, tags, without_tags)

    def _search(
        self,
        vector: np.ndarray,
        photo: WorkingPhoto,
        k: int,
        folders: Sequence[str] | None,
        tags: Sequence[str],
        without_tags: Sequence[str],
    ) -> list[SearchResult]:
        exclude = {photo.image_id} if photo.image_id is not None else set()
        return self.search_service.search_vector(
            vector, k, folders, Query((), tuple(tags), tuple(without_tags)), exclude
        )
