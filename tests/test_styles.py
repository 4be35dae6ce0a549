"""Style images come from a file, a URL (cached) or a generator; failures say what to do."""

import pytest

from nst_fast.errors import NstFastError
from nst_fast.styles import load_style_image


def test_local_style_image_is_resized_on_its_longer_side(style_file):
    image = load_style_image(str(style_file), size=40)
    assert image.shape == (3, 32, 40)


def test_generated_style_needs_no_file():
    image = load_style_image("generated:mosaic", size=64)
    assert image.shape == (3, 64, 64) and image.std() > 0.1


def test_missing_style_image_is_named(tmp_path):
    with pytest.raises(NstFastError, match=r"style.image=.*missing.jpg: no such file"):
        load_style_image(str(tmp_path / "missing.jpg"))


def test_unknown_generated_style_lists_the_available_ones():
    with pytest.raises(NstFastError, match="generated:mosaic"):
        load_style_image("generated:nothing")


def test_failed_download_says_how_to_use_a_local_file():
    # Nothing listens on the discard port of the loopback address: fails at once.
    with pytest.raises(NstFastError, match=r"download failed.*style.image=PATH"):
        load_style_image("http://127.0.0.1:9/starry_night.jpg")


def test_unreadable_style_image_is_named(tmp_path):
    path = tmp_path / "style.jpg"
    path.write_text("not an image")
    with pytest.raises(NstFastError, match=r"style\.jpg: not a readable image"):
        load_style_image(str(path))
