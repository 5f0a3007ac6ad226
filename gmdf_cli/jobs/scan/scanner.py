"""What every scanner shares: the inputs it is given (``Indexed``), what it gives back per file (``Done``), the
``Scanner`` protocol the job drives, and the report images of a finished file."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ...data.media import MediaItem
from ...report.render import FaceImages
from ...report.results import FileResult
from ...runtime.compiled import CompiledModel
from .request import RunInfo, ScanRequest

if TYPE_CHECKING:  # the model and its torch load when a scan starts, after every usage check
    from ...api import Detector


@dataclass(frozen=True)
class Indexed:
    """An input and its position in the input list (which names its image folder and orders the report)."""

    index: int
    item: MediaItem


@dataclass(frozen=True)
class Done:
    """A finished file: its position, its result, and its report images (crops, heatmaps) when asked."""

    index: int
    result: FileResult
    faces: list[FaceImages] = field(default_factory=list)


class Scanner(Protocol):
    """Runs the engine over inputs: in this process, in worker processes, or on Ray."""

    info: RunInfo

    def results(
        self, items: list[Indexed], on_file: Callable[[FileResult], None], on_frame: Callable[[], None]
    ) -> Iterator[Done]:
        """Each input's result exactly once, in any order, as it finishes; ``on_file``/``on_frame`` report the
        frames of the file being read where the scanner can see them."""
        ...

    def close(self) -> None: ...


def faces_for(model: Any, result: FileResult, faces: int, heatmaps: bool) -> list[FaceImages]:
    """The file's most suspicious faces for the report, with their Grad-CAM overlays and notes when asked."""
    chosen = result.suspicious[:faces]
    if not heatmaps or not chosen:
        return [FaceImages(s) for s in chosen]
    from ...analysis.heatmaps import cam_note, gradcam_maps, overlay
    from ...data.faces import face_box_in_crop

    maps = gradcam_maps(model, [s.crop for s in chosen])  # Grad-CAM wants fp32 (see cam_model)
    return [
        FaceImages(s, overlay(s.display, m), cam_note(m, face_box_in_crop(s.box, m.shape[1])))
        for s, m in zip(chosen, maps, strict=True)
    ]


def cam_model(request: ScanRequest, detector: Detector) -> Any:
    """The model Grad-CAM explains: the detector's, or a float copy when it runs in half precision."""
    if request.heatmaps and request.precision != "fp32":
        model = detector.model
        assert not isinstance(model, CompiledModel), "a scan with heatmaps runs torch (open_detector)"
        return copy.deepcopy(model).float()
    return detector.model
