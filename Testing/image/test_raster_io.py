"""2D raster files (PNG, JPEG, TIFF, BMP) through read_image / write_image: round trips of every format and bit
depth (values and spacing exact, JPEG values approximately), files made by other writers (Pillow, tifffile,
SimpleITK), colour and alpha, palettes, pages, truncated files, and what writing refuses."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image as PillowImage
from PIL import TiffImagePlugin

from MedSegCNNLib.errors import InputError, OutputExistsError
from MedSegCNNLib.image.cases import list_cases
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.io import COLOR_CHANNEL_NAMES, has_physical_spacing, read_image, write_image
from MedSegCNNLib.image.sitk_bridge import to_sitk

RNG = np.random.default_rng(7)
TRUNCATED = "is truncated or corrupt"


def picture(shape: tuple[int, ...], dtype: np.dtype | type, high: int | None = None) -> np.ndarray:
    """Random pixels: integers over the whole range of ``dtype`` (or 0..``high``), floats normal."""
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, (high if high is not None else info.max) + 1, size=shape).astype(dtype)


def image_of(array: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), **kwargs) -> Image:
    """A 2D image (channels first when ``array`` has 3 axes)."""
    return Image.from_array(array, spacing=spacing, spatial_dims=2, **kwargs)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# ----- round trips ----------------------------------------------------------------------------------------------

# (extension, array shape (channels first), dtype, spacing): the spacings are stored exactly by the format (PNG and
# BMP: whole pixels per metre; TIFF and JPEG: fractions)
ROUND_TRIPS = [
    (".png", (20, 30), np.uint8, (0.5, 0.25)),
    (".png", (20, 30), np.uint16, (0.2, 0.04)),
    (".png", (3, 20, 30), np.uint8, (0.5, 0.5)),
    (".bmp", (20, 30), np.uint8, (0.1, 0.125)),
    (".bmp", (3, 20, 30), np.uint8, (0.5, 2.0)),
    (".tif", (20, 30), np.uint8, (0.3, 0.7)),
    (".tiff", (20, 30), np.uint16, (0.0123, 2.9)),
    (".tif", (20, 30), np.int16, (0.3, 0.7)),
    (".tif", (20, 30), np.int32, (1.3, 0.9)),
    (".tif", (20, 30), np.uint32, (0.3, 0.7)),
    (".tif", (20, 30), np.float32, (0.3, 0.7)),
    (".tif", (20, 30), np.float64, (0.3, 0.7)),
    (".TIF", (3, 20, 30), np.uint8, (0.3, 0.7)),
    (".tif", (3, 20, 30), np.uint16, (0.3, 0.7)),
    (".tif", (2, 20, 30), np.float32, (0.3, 0.7)),
    (".tif", (5, 20, 30), np.uint8, (0.3, 0.7)),
]


@pytest.mark.parametrize(("extension", "shape", "dtype", "spacing"), ROUND_TRIPS)
def test_lossless_round_trip_keeps_values_type_and_spacing_exactly(tmp_path, extension, shape, dtype, spacing):
    image = image_of(picture(shape, dtype), spacing)
    path = write_image(image, tmp_path / f"case{extension}")
    back = read_image(path)
    assert back.spatial_dims == 2 and back.num_channels == image.num_channels
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert back.spacing == spacing  # exactly
    assert back.origin == (0.0, 0.0)
    np.testing.assert_array_equal(back.direction, np.eye(2))
    assert has_physical_spacing(path)
    assert files_in(tmp_path) == [f"case{extension}"]


@pytest.mark.parametrize("shape", [(40, 48), (3, 40, 48)])
def test_jpeg_round_trip_keeps_shape_type_and_spacing_and_values_approximately(tmp_path, shape):
    smooth = np.add.outer(np.arange(shape[-2]) * 4, np.arange(shape[-1]) * 3).astype(np.uint8)
    array = np.broadcast_to(smooth, shape).copy()
    if len(shape) == 3:
        array[1] //= 2
    image = image_of(array, (0.3, 0.7))
    back = read_image(write_image(image, tmp_path / "photo.jpg"))
    assert back.array.shape == shape and back.array.dtype == np.uint8
    assert back.spacing == (0.3, 0.7)
    assert np.abs(back.array.astype(int) - array).mean() < 2.0


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_label_maps_are_kept_exactly_at_8_and_16_bits(tmp_path, extension):
    labels = (LabelInfo(1, "vessel"), LabelInfo(2, "disc"))
    small = image_of(RNG.integers(0, 3, (20, 30)).astype(np.int16), labels=labels)  # label_dtype above 255: int16
    large = image_of(RNG.choice([0, 1, 300, 65535], (20, 30)).astype(np.int32))
    binary = image_of(RNG.integers(0, 2, (20, 30)).astype(bool))
    for name, image, stored in (("small", small, np.uint8), ("large", large, np.uint16), ("mask", binary, np.uint8)):
        back = read_image(write_image(image, tmp_path / f"{name}{extension}"))
        if extension == ".png":
            assert back.array.dtype == stored
        np.testing.assert_array_equal(back.array, image.array.astype(np.int64))


def test_png_stores_whole_pixels_per_metre_and_says_so(tmp_path, caplog):
    image = image_of(picture((10, 12), np.uint8), (0.3, 0.7))
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        back = read_image(write_image(image, tmp_path / "a.png"))
    assert back.spacing == (1000 / 3333, 1000 / 1429)
    assert "whole pixels per metre" in caplog.text and "write .tif to keep it exactly" in caplog.text
    assert read_image(write_image(image, tmp_path / "a.tif")).spacing == (0.3, 0.7)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".tif", ".bmp"])
def test_a_spacing_of_one_is_written_as_pixel_units(tmp_path, caplog, extension):
    image = image_of(np.arange(256, dtype=np.uint8).reshape(16, 16))
    path = write_image(image, tmp_path / f"a{extension}")
    assert not has_physical_spacing(path)
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        assert read_image(path).spacing == (1.0, 1.0)
    assert "no pixel size in its metadata" in caplog.text and "pixel units" in caplog.text


def test_pixel_units_are_said_once_per_folder(tmp_path, caplog):
    """A dataset of thousands of pictures without a pixel size gets one line per folder, not one per read."""
    image = image_of(np.arange(256, dtype=np.uint8).reshape(16, 16))
    paths = [write_image(image, tmp_path / f"{name}.png") for name in ("a", "b")]
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        for path in (*paths, *paths):
            read_image(path)
    assert caplog.text.count("no pixel size in its metadata") == 1


def test_single_slice_volume_is_written_as_2d_and_geometry_not_kept_is_logged(tmp_path, make_image, caplog):
    volume = make_image((1, 5, 6), dtype=np.uint8)  # oblique direction, origin away from 0
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        back = read_image(write_image(volume, tmp_path / "slice.tif"))
    assert back.spatial_dims == 2
    np.testing.assert_array_equal(back.array, volume.array[0])
    assert back.spacing == volume.spacing[:2]
    assert "store no origin or orientation" in caplog.text
    colour = Image.from_array(picture((3, 1, 5, 6), np.uint8), spatial_dims=3)
    np.testing.assert_array_equal(read_image(write_image(colour, tmp_path / "c.png")).array, colour.array[:, 0])


def test_existing_raster_file_is_kept_unless_overwrite(tmp_path):
    path = write_image(image_of(picture((8, 8), np.uint8)), tmp_path / "a.png")
    before = path.read_bytes()
    second = image_of(picture((8, 8), np.uint8))
    with pytest.raises(OutputExistsError):
        write_image(second, path)
    assert path.read_bytes() == before
    write_image(second, path, overwrite=True)
    np.testing.assert_array_equal(read_image(path).array, second.array)
    assert files_in(tmp_path) == ["a.png"]


# ----- files made by other writers ------------------------------------------------------------------------------


def test_row_r_column_c_is_array_r_c_and_itk_index_c_r(tmp_path):
    array = np.arange(6 * 9, dtype=np.uint8).reshape(6, 9)
    PillowImage.fromarray(array).save(tmp_path / "grid.png")
    image = read_image(tmp_path / "grid.png")
    with PillowImage.open(tmp_path / "grid.png") as pillow:
        assert pillow.getpixel((7, 2)) == image.array[2, 7]  # Pillow takes (column, row)
    assert image.size == (9, 6)
    assert to_sitk(image).GetPixel(7, 2) == image.array[2, 7]  # ITK index (x = column, y = row)


def test_rgb_becomes_red_green_blue_channels_and_alpha_is_dropped(tmp_path, caplog):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 128
    PillowImage.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    PillowImage.fromarray(rgba).save(tmp_path / "rgba.png")
    PillowImage.fromarray(rgba[..., :3]).save(tmp_path / "rgb.bmp")
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    for name in ("rgb.png", "rgba.png", "rgb.bmp", "rgba.tif"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
            image = read_image(tmp_path / name)
        assert image.num_channels == 3 and image.size == (5, 4)
        assert [int(image.array[c].max()) for c in range(3)] == [10, 20, 30]
        assert ("alpha (transparency) channel is dropped" in caplog.text) == ("rgba" in name)
    assert COLOR_CHANNEL_NAMES == ("red", "green", "blue")


def test_gray_with_alpha_and_bilevel_pictures_are_one_channel(tmp_path, caplog):
    gray = picture((6, 7), np.uint8)
    PillowImage.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        np.testing.assert_array_equal(read_image(tmp_path / "la.png").array, gray)
    assert "gray channel is read" in caplog.text
    bits = RNG.integers(0, 2, (6, 7)).astype(bool)
    PillowImage.fromarray(bits).save(tmp_path / "bits.png")
    back = read_image(tmp_path / "bits.png")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, bits)


def test_16_bit_colour_png_keeps_its_16_bits(tmp_path):
    """Pillow reduces 16-bit colour PNGs to 8 bits; SimpleITK decodes them."""
    colour = picture((6, 7, 3), np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "deep.png"))
    image = read_image(tmp_path / "deep.png")
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, np.moveaxis(colour, -1, 0))


@pytest.mark.parametrize(
    ("save", "spacing"),
    [
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.png", dpi=(254, 127)), (0.1, 0.2)),  # pHYs, per metre
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.jpg", dpi=(254, 127)), (0.1, 0.2)),  # JFIF, per inch
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.bmp", dpi=(254, 254)), (0.1, 0.1)),
        (lambda a, p: tifffile.imwrite(p / "x.tif", a, resolution=(254, 127), resolutionunit="INCH"), (0.1, 0.2)),
        (lambda a, p: tifffile.imwrite(p / "x.tif", a, resolution=(4, 20), resolutionunit="CENTIMETER"), (2.5, 0.5)),
        (
            lambda a, p: tifffile.imwrite(p / "x.tif", a, imagej=True, resolution=(4, 2), metadata={"unit": "um"}),
            (0.00025, 0.0005),
        ),
        (lambda a, p: tifffile.imwrite(p / "x.tif", a, resolution=(72, 72), resolutionunit="NONE"), None),
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.png"), None),
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.jpg"), None),  # JFIF density without a unit
        (lambda a, p: PillowImage.fromarray(a).save(p / "x.bmp", dpi=(0, 0)), None),
    ],
)
def test_spacing_comes_from_resolution_metadata_in_a_physical_unit(tmp_path, save, spacing):
    save(picture((6, 7), np.uint8), tmp_path)
    (path,) = tmp_path.iterdir()
    assert has_physical_spacing(path) is (spacing is not None)
    np.testing.assert_allclose(read_image(path).spacing, spacing or (1.0, 1.0), rtol=1e-12)


def test_jpeg_exif_resolution_in_centimetres(tmp_path):
    exif = PillowImage.Exif()
    exif[0x0128] = 3
    exif[0x011A], exif[0x011B] = TiffImagePlugin.IFDRational(100, 3), TiffImagePlugin.IFDRational(20, 1)
    PillowImage.fromarray(picture((6, 7, 3), np.uint8)).save(tmp_path / "camera.jpg", exif=exif)
    assert read_image(tmp_path / "camera.jpg").spacing == (0.3, 0.5)


def test_tiff_layouts_other_writers_use(tmp_path):
    gray16 = picture((40, 50), np.uint16)
    rgb = picture((40, 50, 3), np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", gray16, tile=(16, 16))
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "deflate.tif", gray16, compression="zlib")
    PillowImage.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")  # decoded by Pillow if need be
    PillowImage.fromarray(gray16).save(tmp_path / "lzw16.tif", compression="tiff_lzw")
    tifffile.imwrite(tmp_path / "thumbnail.tif", gray16)
    tifffile.imwrite(tmp_path / "thumbnail.tif", gray16[::4, ::4], append=True, subfiletype=1)  # a reduced copy
    for name, expected in [
        ("tiled.tif", gray16),
        ("planar.tif", np.moveaxis(rgb, -1, 0)),
        ("deflate.tif", gray16),
        ("lzw.tif", np.moveaxis(rgb, -1, 0)),
        ("lzw16.tif", gray16),
        ("thumbnail.tif", gray16),
    ]:
        image = read_image(tmp_path / name)
        assert image.array.dtype == expected.dtype, name
        np.testing.assert_array_equal(image.array, expected, err_msg=name)


def test_a_codec_neither_library_decodes_right_asks_for_imagecodecs(tmp_path):
    """tifffile decodes LZW only with imagecodecs; Pillow reduces 16-bit colour to 8 bits, so it may not stand in."""
    colour = picture((20, 30, 3), np.uint16)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp_path / "deep_lzw.tif"))
    writer.SetUseCompression(True)
    writer.SetCompressor("LZW")
    writer.Execute(sitk.GetImageFromArray(colour, isVector=True))
    if importlib.util.find_spec("imagecodecs") is None:
        with pytest.raises(InputError, match=r"its LZW compression needs the imagecodecs package.*pip install"):
            read_image(tmp_path / "deep_lzw.tif")
    else:
        np.testing.assert_array_equal(read_image(tmp_path / "deep_lzw.tif").array, np.moveaxis(colour, -1, 0))


def test_a_file_is_read_by_its_content_and_other_formats_are_named(tmp_path, caplog):
    PillowImage.fromarray(picture((5, 6), np.uint8)).save(tmp_path / "really_png.jpg", format="PNG")
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib"):
        assert read_image(tmp_path / "really_png.jpg").size == (6, 5)
    assert "it is a PNG file despite its .jpg name" in caplog.text
    PillowImage.fromarray(picture((5, 6), np.uint8)).save(tmp_path / "gif.png", format="GIF")
    with pytest.raises(InputError, match=r"gif\.png: it holds a GIF image.*convert it to PNG"):
        read_image(tmp_path / "gif.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(InputError, match=r"text\.png: it is not a PNG image"):
        read_image(tmp_path / "text.png")


# ----- palettes and pages ---------------------------------------------------------------------------------------


def palette_png(path: Path, indices: np.ndarray) -> Path:
    picture_ = PillowImage.fromarray(indices, mode="P")
    picture_.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [7] * (3 * 252))
    picture_.save(path)
    return path


def test_palette_pictures_are_refused_as_images_and_read_as_indices_on_request(tmp_path):
    indices = RNG.integers(0, 4, (6, 7)).astype(np.uint8)
    path = palette_png(tmp_path / "voc.png", indices)
    with pytest.raises(InputError, match=r"voc\.png is a palette \(indexed-colour\) image.*not intensities.*convert"):
        read_image(path)
    image = read_image(path, palette="indices")
    assert image.num_channels == 1
    np.testing.assert_array_equal(image.array, indices)
    colormap = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
    tifffile.imwrite(tmp_path / "voc.tif", indices, photometric="palette", colormap=colormap)
    with pytest.raises(InputError, match="palette"):
        read_image(tmp_path / "voc.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "voc.tif", palette="indices").array, indices)


def test_several_pages_are_refused_as_one_image_and_read_as_a_stack(tmp_path):
    pages = picture((3, 6, 7), np.uint16)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")
    with pytest.raises(InputError, match=r'pages\.tif holds 3 pages, where one 2D image is expected.*pages="stack"'):
        read_image(tmp_path / "pages.tif")
    stack = read_image(tmp_path / "pages.tif", pages="stack")
    assert stack.spatial_dims == 3 and stack.size == (7, 6, 3) and stack.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(stack.array, pages)

    frames = [PillowImage.fromarray(frame) for frame in picture((3, 6, 7), np.uint8)]
    frames[0].save(tmp_path / "movie.png", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"movie\.png holds 3 frames \(an animated picture\)"):
        read_image(tmp_path / "movie.png")
    stack = read_image(tmp_path / "movie.png", pages="stack")
    np.testing.assert_array_equal(stack.array, np.stack([np.asarray(frame) for frame in frames]))


def test_pages_of_different_sizes_are_no_stack(tmp_path):
    tifffile.imwrite(tmp_path / "mixed.tif", picture((6, 7), np.uint8))
    tifffile.imwrite(tmp_path / "mixed.tif", picture((3, 4), np.uint8), append=True)
    with pytest.raises(InputError, match=r"pages differ in size or type \(page 1 is \(3, 4\) uint8, page 0 \(6, 7\)"):
        read_image(tmp_path / "mixed.tif", pages="stack")


def test_imagej_stack_gets_its_slice_spacing(tmp_path):
    pages = picture((4, 6, 7), np.uint8)
    tifffile.imwrite(
        tmp_path / "z.tif",
        pages,
        imagej=True,
        resolution=(2, 2),
        metadata={"unit": "mm", "spacing": 1.5, "axes": "ZYX"},
    )
    assert read_image(tmp_path / "z.tif", pages="stack").spacing == (0.5, 0.5, 1.5)


def test_options_are_checked(tmp_path):
    with pytest.raises(InputError, match='pages must be "single" or "stack"'):
        read_image(tmp_path / "a.png", pages="all")
    with pytest.raises(InputError, match='palette must be "refuse" or "indices"'):
        read_image(tmp_path / "a.png", palette="rgb")


# ----- damaged files --------------------------------------------------------------------------------------------


def _write_whole(path: Path) -> None:
    array = picture((60, 80, 3), np.uint8)
    if path.suffix == ".tif":
        tifffile.imwrite(path, array, photometric="rgb", compression="zlib" if "deflate" in path.name else None)
    else:
        PillowImage.fromarray(array).save(path)


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.bmp", "a.tif", "deflate.tif"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_files_are_refused_not_read_with_zeros(tmp_path, name, keep):
    path = tmp_path / name
    _write_whole(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=TRUNCATED) as caught:
        read_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_png_missing_its_end_or_with_a_damaged_chunk_is_refused(tmp_path):
    path = tmp_path / "a.png"
    _write_whole(path)
    data = path.read_bytes()
    path.write_bytes(data[:-12])  # the IEND chunk: every pixel is there, the file is not complete
    with pytest.raises(InputError, match=TRUNCATED):
        read_image(path)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the compressed pixel data: its chunk's CRC no longer matches
    path.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match=TRUNCATED):
        read_image(path)


def test_multi_page_tiff_cut_after_its_first_page_is_refused(tmp_path):
    pages = picture((3, 40, 50), np.uint8)
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.5)])
    for pages in ("stack", "single"):  # not read as a file of one page
        with pytest.raises(InputError, match=f"{TRUNCATED}: its chain of pages breaks off"):
            read_image(path, pages=pages)


# ----- what writing refuses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "image", "message"),
    [
        ("a.jpg", image_of(RNG.integers(0, 3, (20, 30)).astype(np.uint8)), r"label map \(it holds only 3 distinct"),
        ("a.jpg", image_of(picture((20, 30), np.uint8), labels=[LabelInfo(1, "a")]), r"label map \(it names"),
        ("a.png", image_of(picture((20, 30), np.float32)), r"PNG stores whole numbers.*float32.*write \.tif"),
        ("a.bmp", image_of(picture((20, 30), np.float64)), r"BMP stores whole numbers"),
        ("a.png", image_of(np.array([[-1, 2]], np.int16)), r"negative values \(min -1\).*0\.\.65535.*\.nrrd"),
        ("a.png", image_of(np.array([[0, 70000]], np.int32)), r"values up to 70000.*never rescaled"),
        ("a.bmp", image_of(np.array([[0, 300]], np.uint16)), r"values up to 300.*stores 0\.\.255"),
        ("a.png", image_of(picture((3, 4, 5), np.uint16)), r"colour image stores 0\.\.255"),
        ("a.png", image_of(picture((4, 4, 5), np.uint8)), r"1 or 3 channels.*has 4 channels.*\.tif"),
        ("a.png", Image.from_array(picture((2, 4, 5), np.uint8)), r"3D with 2 slices.*\.nrrd"),
        ("a.tif", image_of(np.array([[0, 2**40]], np.int64)), r"64-bit integers.*\.nrrd"),
    ],
)
def test_writes_that_would_change_values_are_refused(tmp_path, name, image, message):
    with pytest.raises(InputError, match=message):
        write_image(image, tmp_path / name)
    assert files_in(tmp_path) == []


def test_widened_and_narrowed_types_keep_the_values(tmp_path):
    halves = image_of(picture((4, 5), np.float16))
    np.testing.assert_array_equal(read_image(write_image(halves, tmp_path / "h.tif")).array, halves.array)
    wide = image_of(np.array([[0, -5, 2**31 - 1]], np.int64))
    back = read_image(write_image(wide, tmp_path / "w.tif"))
    assert back.array.dtype == np.int32
    np.testing.assert_array_equal(back.array, wide.array)


def test_raster_files_are_listed_as_cases(tmp_path):
    for name in ("b.png", "a.TIF", "c.jpeg", "d.bmp"):
        (tmp_path / name).write_bytes(b"")
    assert list(list_cases(tmp_path)) == ["a", "b", "c", "d"]
    assert has_physical_spacing(tmp_path / "nifti.nii.gz")  # not a raster file: spacing is in mm
