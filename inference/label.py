"""The "AI-generated" disclosure: a visible label on the pixels and a tag in the file.

The visible label is switchable per call; the metadata tag is always written, so the
output says what it is even when the label is cropped or turned off.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape, unescape

import cv2
import numpy as np
from PIL import Image

from inference.align import Roi
from inference.media import (
    after_jpeg_app_segments,
    after_png_header,
    encode_image,
    jpeg_segment,
    normalise_format,
    png_chunk,
)

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
FONT = cv2.FONT_HERSHEY_SIMPLEX
# IPTC's term for a picture that mixes a capture with machine-made elements.
DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
EXIF_IMAGE_DESCRIPTION = 0x010E
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def label_roi(width: int, height: int, text: str, position: str) -> tuple[Roi, float, int]:
    """Where the label goes, its font scale and stroke, sized to the image.

    The text is about 3% of the shorter side tall (never under 10 px), so it stays legible
    on a thumbnail and unobtrusive on a poster.
    """
    if position not in POSITIONS:
        position = "bottom-right"
    text_h = max(10, round(min(width, height) * 0.03))
    base_h = cv2.getTextSize(text, FONT, 1.0, 1)[0][1]
    font_scale = text_h / max(base_h, 1)
    thickness = max(1, round(text_h / 12))
    (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    pad = max(3, text_h // 3)
    margin = max(2, text_h // 2)
    box_w, box_h = tw + 2 * pad, th + baseline + 2 * pad
    x0 = margin if position.endswith("left") else width - margin - box_w
    y0 = margin if position.startswith("top") else height - margin - box_h
    x0, y0 = max(0, x0), max(0, y0)
    roi = Roi(x0, y0, min(width, x0 + box_w), min(height, y0 + box_h))
    return roi, font_scale, thickness


def draw_label(image: np.ndarray, text: str, position: str = "bottom-right") -> Roi:
    """Draw ``text`` on ``image`` (BGR, in place) over a translucent dark plate.

    White text with a dark outline on a darkened plate reads on white walls and on black
    suits alike. Returns the region drawn on.
    """
    height, width = image.shape[:2]
    roi, font_scale, thickness = label_roi(width, height, text, position)
    if roi.empty:
        return roi
    region = image[roi.slices]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # 60% darker plate
    (_, th), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    pad = (roi.height - th - baseline) // 2
    origin = (pad, pad + th)
    cv2.putText(region, text, origin, FONT, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(region, text, origin, FONT, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return roi


def xmp_packet(tag: str) -> str:
    """A minimal XMP packet: the tag as dc:description plus IPTC's digital source type."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(tag)}</rdf:li>'
        "</rdf:Alt></dc:description>"
        f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    )


def webp_exif(tag: str) -> bytes:
    """EXIF bytes with ImageDescription set, for Pillow's WebP writer."""
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = tag
    return exif.tobytes()


def tag_jpeg(data: bytes, tag: str) -> bytes:
    """Add a COM segment with ``tag`` and an XMP APP1 segment after the leading APPn run."""
    pos = after_jpeg_app_segments(data)
    comment = tag.encode("utf-8")[:65000]
    xmp = XMP_JPEG_HEADER + xmp_packet(tag).encode("utf-8")
    return data[:pos] + jpeg_segment(0xE1, xmp) + jpeg_segment(0xFE, comment) + data[pos:]


def tag_png(data: bytes, tag: str) -> bytes:
    """Add a tEXt "Comment" chunk and an iTXt XMP chunk right after IHDR."""
    end = after_png_header(data)
    text = png_chunk(b"tEXt", b"Comment\x00" + tag.encode("latin-1", "replace"))
    itxt = png_chunk(
        b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp_packet(tag).encode("utf-8")
    )
    return data[:end] + text + itxt + data[end:]


def encode_tagged(
    bgr: np.ndarray,
    output_format: str,
    tag: str,
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
) -> bytes:
    """Encode a frame with the disclosure tag in its metadata (JPEG COM + XMP, PNG tEXt +
    XMP, WebP XMP + EXIF ImageDescription) and the colour profile ``icc``, if any."""
    fmt = normalise_format(output_format)
    if fmt == "webp":
        return encode_image(
            bgr, fmt, alpha=alpha, xmp=xmp_packet(tag), exif=webp_exif(tag), icc=icc
        )
    data = encode_image(bgr, fmt, alpha=alpha, icc=icc)
    return tag_jpeg(data, tag) if fmt == "jpg" else tag_png(data, tag)


def read_tag(data: bytes) -> str | None:
    """The disclosure tag of a JPEG, PNG or WebP made here, or None when it has none."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = image.info
            if image.format == "PNG":
                return info.get("Comment")
            if image.format == "JPEG" and info.get("comment"):
                return bytes(info["comment"]).decode("utf-8", "replace")
            description = image.getexif().get(EXIF_IMAGE_DESCRIPTION)
            if description:
                return str(description)
            xmp = info.get("xmp")
            if xmp:
                text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
                start = text.find('x-default">')
                if start >= 0:
                    start += len('x-default">')
                    return unescape(text[start : text.find("</rdf:li>", start)])
    except (OSError, ValueError):
        return None
    return None
