"""Face restoration after a swap (GFPGAN 1.4 contract): sharpen the face region only.

Input and output are [1,3,512,512] RGB in -1..1, the face aligned to the FFHQ template;
the result is pasted back through a blurred box mask.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from inference.align import FFHQ_512, Roi, box_mask, paste_back, warp_to_template
from inference.faces import Face


class FaceEnhancer:
    """Runs a GFPGAN-style restorer on one face at a time, in place.

    ``strength`` mixes the restored face with the original (1.0: restored only); a little
    of the original keeps skin texture that restorers tend to smooth away.
    """

    def __init__(self, session: Any, *, strength: float = 0.8) -> None:
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[2]
        self.size = int(side) if isinstance(side, int) else 512
        self.template = FFHQ_512 * (self.size / 512.0)
        self.strength = float(np.clip(strength, 0.0, 1.0))
        self.mask = box_mask((self.size, self.size), blur=0.3, padding=0.02) * self.strength

    def enhance(self, frame: np.ndarray, face: Face) -> Roi:
        """Restore ``face`` in ``frame`` (BGR, in place); returns the region changed."""
        crop, matrix = warp_to_template(frame, face.landmarks, self.template, self.size)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
        blob = (rgb * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None]
        out = self.session.run(None, {self.input_name: blob})[0][0]
        restored = np.clip((out.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        return paste_back(frame, cv2.cvtColor(restored, cv2.COLOR_RGB2BGR), matrix, self.mask)
