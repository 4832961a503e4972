"""Untrusted image bytes: what is refused, and how accepted images are normalised."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from inference.config import EngineConfig
from inference.errors import ImageDecodeFailed, ImagePixelExceed, UnsupportedMediaType
from inference.media import check_complete, decode_image, encode_image, sniff
from tests.inference.conftest import face_bytes


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR announcing ``width`` x ``height``, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    )


def encode_with_pillow(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "image"),
        (b"GIF89a" + b"\x00" * 20, "image"),
        (b"BM" + b"\x00" * 40, "image"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20, "video"),
        (b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 20, "video"),
        (b"\x1a\x45\xdf\xa3" + b"\x00" * 20, "video"),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 20, "video"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20, None),
        (b"hello, this is a text file\n", None),
        (b"", None),
    ],
)
def test_sniff_tells_images_from_videos_by_magic_bytes(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_a_real_photo_decodes_to_bgr_with_its_size(config: EngineConfig) -> None:
    decoded = decode_image(face_bytes("two_people.jpg"), config)
    assert decoded.bgr.shape == (661, 1126, 3) and decoded.bgr.dtype == np.uint8
    assert decoded.alpha is None


def test_text_renamed_jpg_is_refused_as_unsupported(config: EngineConfig) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_image(b"<html><body>not a picture</body></html>\n" * 10, config)


def test_truncated_jpeg_fails_to_decode(config: EngineConfig) -> None:
    data = face_bytes("obama.jpg")
    with pytest.raises(ImageDecodeFailed):
        decode_image(data[: len(data) // 2], config)


def complete_images() -> dict[str, bytes]:
    """A real photo in each format whose end ``check_complete`` finds."""
    photo = Image.open(io.BytesIO(face_bytes("obama.jpg"))).convert("RGB")
    return {
        "jpg": face_bytes("obama.jpg"),
        "progressive jpg": encode_with_pillow(photo, "JPEG", progressive=True),
        "png": encode_with_pillow(photo, "PNG"),
        "webp": encode_with_pillow(photo, "WEBP"),
        "bmp": encode_with_pillow(photo, "BMP"),
    }


@pytest.mark.parametrize("fmt", ["jpg", "progressive jpg", "png", "webp", "bmp"])
def test_an_image_cut_short_is_refused_from_its_structure(fmt: str) -> None:
    """The first 4 KB, half, or all but the last byte or two of a file: incomplete, found
    without decoding a pixel; the whole file, and one with bytes after its end, pass."""
    data = complete_images()[fmt]
    check_complete(data)
    check_complete(data + b"\x00trailing bytes a camera appended")
    for cut in (4096, len(data) // 2, len(data) - 2, len(data) - 1):
        with pytest.raises(ImageDecodeFailed, match="incomplete"):
            check_complete(data[:cut])


def test_a_jpeg_thumbnail_ending_before_the_scan_does_not_complete_a_cut_photo() -> None:
    """EXIF thumbnails carry their own end marker, before the photo's scan: a photo cut
    inside its scan is still incomplete."""
    photo = Image.open(io.BytesIO(face_bytes("obama.jpg"))).convert("RGB")
    thumbnail = encode_with_pillow(photo.resize((64, 80)), "JPEG")
    data = bytearray(encode_with_pillow(photo, "JPEG"))
    app1 = b"Exif\x00\x00" + thumbnail  # not a real EXIF block: the marker is what counts
    data[2:2] = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    check_complete(bytes(data))
    with pytest.raises(ImageDecodeFailed):
        check_complete(bytes(data[: len(data) - 100]))


def test_empty_file_fails_to_decode(config: EngineConfig) -> None:
    with pytest.raises(ImageDecodeFailed):
        decode_image(b"", config)


def test_png_header_claiming_20000_square_is_refused_before_decoding(
    config: EngineConfig,
) -> None:
    with pytest.raises(ImagePixelExceed) as info:
        decode_image(png_header_claiming(20000, 20000), config)
    assert info.value.code == "ImagePixelExceed"


def test_images_over_the_configured_side_or_pixel_limits_are_refused() -> None:
    data = face_bytes("obama.jpg")  # 910 x 1137
    with pytest.raises(ImagePixelExceed):
        decode_image(data, EngineConfig(max_image_side=1000))
    with pytest.raises(ImagePixelExceed):
        decode_image(data, EngineConfig(max_image_pixels=1_000_000))
    assert decode_image(data, EngineConfig(max_image_side=1137)).height == 1137


def test_a_video_given_as_an_image_is_unsupported(config: EngineConfig) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_image(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100, config)


def test_exif_orientation_is_applied(config: EngineConfig) -> None:
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red (RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    data = encode_with_pillow(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    bgr = decode_image(data, config).bgr
    assert bgr.shape == (100, 40, 3)
    # After the clockwise turn the red half is on top.
    assert bgr[:40, :, 2].mean() > 200 and bgr[60:, :, 2].mean() < 50


def icc_profile(kind: str = "sRGB") -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile(kind)).tobytes()


def profile_of(data: bytes) -> bytes | None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.info.get("icc_profile")


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
@pytest.mark.parametrize("given", ["JPEG", "PNG"])
def test_the_targets_rgb_colour_profile_is_carried_into_the_output(
    config: EngineConfig, given: str, fmt: str
) -> None:
    # A phone photo in Display P3 must not come back as plain sRGB (duller in viewers).
    # The profile here is made on the spot; what matters is that its bytes survive.
    profile = icc_profile()
    pixels = np.full((24, 32, 3), (200, 40, 90), np.uint8)
    data = encode_with_pillow(Image.fromarray(pixels), given, icc_profile=profile)
    decoded = decode_image(data, config)
    assert decoded.icc == profile
    out = encode_image(decoded.bgr, fmt, icc=decoded.icc)
    assert profile_of(out) == profile
    assert decode_image(out, config).bgr.shape == (24, 32, 3)


def test_a_profile_longer_than_one_jpeg_segment_is_split_and_comes_back_whole() -> None:
    profile = icc_profile() + bytes(range(256)) * 600  # about 154 kB: three APP2 segments
    out = encode_image(np.zeros((8, 8, 3), np.uint8), "jpg", icc=profile)
    assert out.count(b"ICC_PROFILE\x00") == 3
    assert profile_of(out) == profile


def test_a_profile_that_does_not_describe_rgb_pixels_is_left_out(config: EngineConfig) -> None:
    # A Lab profile on RGB pixels, or a grey one on a grey image (which comes out as RGB),
    # would tell viewers to read the output's pixels wrongly: better none at all.
    rgb = Image.fromarray(np.full((16, 16, 3), 90, np.uint8))
    lab_tagged = encode_with_pillow(rgb, "JPEG", icc_profile=icc_profile("LAB"))
    grey = encode_with_pillow(Image.new("L", (16, 16), 90), "PNG", icc_profile=icc_profile())
    for data in (lab_tagged, grey):
        decoded = decode_image(data, config)
        assert decoded.icc is None
        assert profile_of(encode_image(decoded.bgr, "jpg", icc=decoded.icc)) is None


def test_grayscale_images_become_three_channels(config: EngineConfig) -> None:
    data = encode_with_pillow(Image.new("L", (64, 48), 128), "PNG")
    decoded = decode_image(data, config)
    assert decoded.bgr.shape == (48, 64, 3)
    assert int(decoded.bgr[10, 10, 0]) == int(decoded.bgr[10, 10, 2]) == 128


def test_alpha_is_kept_aside_and_put_back_for_png_and_webp(config: EngineConfig) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[..., 3] = 255
    rgba[:, :16, 3] = 0  # left half fully transparent
    decoded = decode_image(encode_with_pillow(Image.fromarray(rgba, "RGBA"), "PNG"), config)
    assert decoded.alpha is not None and decoded.alpha[:, :16].max() == 0
    # Transparent pixels are shown on white to the detector and in a JPEG.
    assert decoded.bgr[:, :16].min() == 255
    for fmt in ("png", "webp"):
        out = Image.open(io.BytesIO(encode_image(decoded.bgr, fmt, alpha=decoded.alpha)))
        assert out.mode == "RGBA", fmt
        alpha = np.asarray(out)[..., 3]
        assert alpha[:, :16].max() == 0 and alpha[:, 17:].min() == 255, fmt
    jpeg = Image.open(io.BytesIO(encode_image(decoded.bgr, "jpg", alpha=decoded.alpha)))
    assert jpeg.mode == "RGB"


def test_half_transparent_pixels_keep_their_colour_in_png_output(config: EngineConfig) -> None:
    """A soft shadow or feathered edge: shown on white to the detector, but written back
    with its own colour, not a pale halo (200, 0, 0 at half alpha came out 227, 127, 127)."""
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[...] = (200, 0, 0, 128)
    rgba[:, 8:, 3] = 255
    decoded = decode_image(encode_with_pillow(Image.fromarray(rgba, "RGBA"), "PNG"), config)
    assert tuple(decoded.bgr[0, 0]) == (127, 127, 227)  # BGR, on white
    for fmt in ("png", "webp"):
        out = np.asarray(
            Image.open(io.BytesIO(encode_image(decoded.bgr, fmt, alpha=decoded.alpha)))
        )
        tolerance = 2 if fmt == "png" else 12  # WebP is lossy
        assert np.abs(out[0, 0, :3].astype(int) - (200, 0, 0)).max() <= tolerance, fmt
        assert out[0, 0, 3] == 128, fmt


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_png_naming_a_transparent_colour_keeps_its_transparency(
    config: EngineConfig, mode: str
) -> None:
    image = Image.new(mode, (16, 16), (0, 0, 0) if mode == "RGB" else 0)
    image.paste((90, 90, 90) if mode == "RGB" else 90, (8, 0, 16, 16))
    data = io.BytesIO()
    image.save(data, "PNG", transparency=(0, 0, 0) if mode == "RGB" else 0)
    decoded = decode_image(data.getvalue(), config)
    assert decoded.alpha is not None
    assert decoded.alpha[:, :8].max() == 0 and decoded.alpha[:, 8:].min() == 255


def test_the_rgba_sample_photo_decodes_with_its_alpha(config: EngineConfig) -> None:
    decoded = decode_image(face_bytes("32bit.png"), config)
    assert decoded.bgr.shape == (1200, 626, 3)
    assert decoded.alpha is not None and decoded.alpha.shape == (1200, 626)


@pytest.mark.parametrize(
    ("fmt", "magic"), [("jpg", b"\xff\xd8"), ("png", b"\x89PNG"), ("webp", b"RIFF")]
)
def test_encode_writes_the_asked_format(fmt: str, magic: bytes) -> None:
    image = np.full((20, 30, 3), 90, np.uint8)
    data = encode_image(image, fmt)
    assert data.startswith(magic)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (20, 30, 3)


def test_jpeg_header_claiming_a_huge_canvas_is_refused_before_decoding(
    config: EngineConfig,
) -> None:
    data = bytearray(encode_with_pillow(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    with pytest.raises(ImagePixelExceed):
        decode_image(bytes(data), config)


def test_a_16_bit_grey_png_decodes_to_its_own_tones(config: EngineConfig) -> None:
    """Not clipped to white: the grey levels of a 16-bit scan come through scaled."""
    grey = cv2.imdecode(np.frombuffer(face_bytes("biden.jpg"), np.uint8), cv2.IMREAD_GRAYSCALE)
    png16 = cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes()
    decoded = decode_image(png16, config)
    assert np.abs(decoded.bgr[..., 0].astype(int) - grey).max() <= 1


def test_a_16_bit_grey_png_is_narrowed_to_8_bits_without_wider_copies(
    config: EngineConfig,
) -> None:
    """Its samples' high bytes are taken as they are: no 32-bit working copies (which
    made a 40 MP scan cost a worker over half a gigabyte). Python-side allocations,
    Pillow's own 2 bytes a pixel aside: its samples, the 8-bit grey, the BGR frame."""
    import tracemalloc

    noise = np.random.default_rng(0).integers(0, 0xFFFF, (1000, 1000), dtype=np.uint16)
    png16 = cv2.imencode(".png", noise)[1].tobytes()
    tracemalloc.start()
    try:
        decoded = decode_image(png16, config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(decoded.bgr[..., 2], (noise >> 8).astype(np.uint8))
    assert peak <= 6 * noise.size, f"{peak / noise.size:.1f} bytes a pixel"


def test_an_os2_bitmap_is_measured_by_its_own_header(config: EngineConfig) -> None:
    """OS/2 v1 BMPs keep width and height in 16 bits: a 100x80 one is 100x80, not a bomb."""
    row = bytes(3 * 100)  # 24-bit rows, 300 bytes each: already a multiple of 4
    pixels = row * 80
    header = struct.pack("<IHHHH", 12, 100, 80, 1, 24)
    data = b"BM" + struct.pack("<IHHI", 14 + 12 + len(pixels), 0, 0, 26) + header + pixels
    decoded = decode_image(data, config)
    assert decoded.bgr.shape == (80, 100, 3)
