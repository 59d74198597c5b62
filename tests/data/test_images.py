"""Pixel parity with transformers' CLIP image processor, LLaVA's pad rule, and path confinement."""

import os

import numpy as np
import pytest
from PIL import Image

from vlguard_jax.data.images import PAD_COLOR, ImageError, expand2square, load_pixels, open_rgb, resolve

try:
    from transformers import CLIPImageProcessorPil as Processor
except ImportError:  # older transformers: the PIL implementation is the default class
    from transformers import CLIPImageProcessor as Processor

SIZE = 336


def processor(size=SIZE):
    return Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def photo(w, h, seed):
    """Photo-like content: smooth gradients, edges and noise (bicubic ringing shows up on edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) % 97 * 2.6], -1)
    base[(xx // 17 + yy // 23) % 2 == 0] *= 0.4
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def write_cases(d):
    cases = {}
    cases["odd.jpg"] = Image.fromarray(photo(517, 389, 0))
    cases["tall.png"] = Image.fromarray(photo(211, 643, 1))
    cases["tiny.png"] = Image.fromarray(photo(37, 23, 2))
    cases["grey.png"] = Image.fromarray(photo(401, 299, 3)[..., 0], "L")
    rgba = np.concatenate([photo(333, 444, 4), np.random.default_rng(5).integers(0, 256, (444, 333, 1), np.uint8)], -1)
    cases["rgba.png"] = Image.fromarray(rgba, "RGBA")
    cases["palette.png"] = Image.fromarray(photo(350, 251, 6)).convert("P", palette=Image.Palette.ADAPTIVE)
    for name, img in cases.items():
        img.save(d / name)
    return sorted(cases)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    names = write_cases(d)
    return d, names


def hf(img, size=SIZE):
    return processor(size)(img, return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize("pad", [False, True])
def test_matches_clip_image_processor(images, pad):
    root, names = images
    for name in names:
        ours = load_pixels(root, name, SIZE, pad=pad)
        img = Image.open(root / name).convert("RGB")  # what LLaVA does before the processor
        ref = hf(expand2square(img, PAD_COLOR) if pad else img)
        assert ours.shape == (3, SIZE, SIZE) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=name)


def test_alpha_white_matches_processor_given_the_raw_image(images):
    root, _ = images
    for name in ("rgba.png", "palette.png", "grey.png"):
        ours = load_pixels(root, name, 224, pad=False, alpha="white")
        np.testing.assert_allclose(ours, hf(Image.open(root / name), 224), atol=1e-5, rtol=0, err_msg=name)


def test_real_figstep_rendering(shared_data):
    ref_dir = shared_data / "figstep" / "reference"
    name = sorted(os.listdir(ref_dir))[0]
    ours = load_pixels(ref_dir, name, SIZE, pad=True)
    np.testing.assert_allclose(ours, hf(Image.open(ref_dir / name).convert("RGB")), atol=1e-5, rtol=0)


def test_expand2square_pads_centred_with_the_mean_colour():
    assert PAD_COLOR == (122, 116, 104)
    img = Image.new("RGB", (10, 4), (255, 0, 0))
    sq = np.asarray(expand2square(img))
    assert sq.shape == (10, 10, 3)
    assert (sq[:3] == PAD_COLOR).all() and (sq[3:7] == (255, 0, 0)).all() and (sq[7:] == PAD_COLOR).all()
    tall = np.asarray(expand2square(Image.new("RGB", (3, 8), (0, 0, 255))))
    assert (tall[:, :2] == PAD_COLOR).all() and (tall[:, 2:5] == (0, 0, 255)).all() and (tall[:, 5:] == PAD_COLOR).all()


def test_paths_are_confined_to_the_root(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(tmp_path / "secret.png")
    Image.new("RGB", (20, 20)).save(root / "sub" / "ok.png")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    assert resolve(root, "sub/ok.png") == (root / "sub" / "ok.png").resolve()
    assert resolve(root, "sub/../sub/ok.png") == (root / "sub" / "ok.png").resolve()
    with pytest.raises(ImageError, match="absolute"):
        resolve(root, str(tmp_path / "secret.png"))
    with pytest.raises(ImageError, match="outside the image root"):
        resolve(root, "../secret.png")
    with pytest.raises(ImageError, match="outside the image root"):
        resolve(root, "link.png")


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageError, match="missing.png: image file not found"):
        load_pixels(tmp_path, "missing.png", 28, pad=True)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="corrupt.jpg: cannot decode"):
        open_rgb(tmp_path / "corrupt.jpg")
    good = tmp_path / "trunc.png"
    Image.fromarray(photo(64, 64, 0)).save(good)
    (tmp_path / "trunc2.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="trunc2.png: cannot decode"):
        open_rgb(tmp_path / "trunc2.png")


def test_minigptv2_squashes_the_whole_image_into_the_square():
    """BLIP-2's processor: Resize((size, size), BICUBIC), ToTensor, Normalize(CLIP's mean, std):
    no crop and no pad, so a wide image's left and right halves stay the square's halves."""
    from vlguard_jax.data.images import CLIP_MEAN, CLIP_STD, ImageInput, SquashPixels

    img = Image.new("RGB", (80, 20), (255, 0, 0))
    img.paste((0, 0, 255), (40, 0, 80, 20))  # left half red, right half blue
    x = ImageInput(SquashPixels(16), 3, 0).pixels(img, pad=True)  # `pad` does not apply
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    red = (np.array([1.0, 0.0, 0.0], np.float32) - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    blue = (np.array([0.0, 0.0, 1.0], np.float32) - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    np.testing.assert_allclose(x[:, :, 0], np.broadcast_to(red[:, None], (3, 16)), atol=1e-6)
    np.testing.assert_allclose(x[:, :, -1], np.broadcast_to(blue[:, None], (3, 16)), atol=1e-6)
    expected = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC), np.float32) / 255
    np.testing.assert_allclose(x, ((expected - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1), atol=1e-5)


def test_an_image_input_is_any_dict_of_arrays_and_says_its_token_count():
    """A family whose images differ in shape (here: one 8 px tile per 8 px of width, plus the tile
    grid) gives `ImageInput` a rule with shape classes; an image takes `tokens * prod(key)` tokens,
    and inputs of one class fill a batch's rows."""
    import dataclasses

    from vlguard_jax.data.images import ImageInput, put, shapes

    @dataclasses.dataclass(frozen=True)
    class Tiles:
        size: int = 8

        def work(self, w, h, pad):
            return w * h, w * h

        def key(self, w, h, pad):
            return (-(-w // self.size),)

        def key_of(self, x):
            return (len(x["tiles"]),)

        def blank(self, key, channels):
            return {
                "tiles": np.zeros((*key, channels, self.size, self.size), np.float32),
                "grid": np.zeros(1, np.int32),
            }

        def __call__(self, img, pad):
            n = self.key(*img.size, pad)[0]
            return {"tiles": np.ones((n, 3, self.size, self.size), np.float32), "grid": np.array([n], np.int32)}

    image = ImageInput(Tiles(), 3, 4)
    wide, narrow = image.pixels(Image.new("RGB", (20, 8)), pad=False), image.pixels(Image.new("RGB", (8, 8)), pad=False)
    assert image.count(wide) == 12 and image.count(narrow) == 4 and image.tokens_for(()) == 4
    assert shapes(wide) != shapes(narrow) and shapes(image.blank(2, key=(3,)))[1] == ("tiles", (2, 3, 3, 8, 8))
    batch = image.blank(3, key=(3,))
    put(batch, 1, wide)
    assert batch["tiles"].shape == (3, 3, 3, 8, 8) and batch["tiles"][1].all() and not batch["tiles"][0].any()
    assert list(batch["grid"][:, 0]) == [0, 3, 0]
