"""The template flags take a word and the command checks it against the family registry once its
library loads (flags.py lists no family's template, so --help loads no model code)."""

import pytest

from vlguard_jax import families, flags
from vlguard_jax.data.llava_tokens import TEMPLATES
from vlguard_jax.data.minigptv2_tokens import TEMPLATE as MINIGPTV2_TEMPLATE
from vlguard_jax.errors import UsageError
from vlguard_jax.generate.__main__ import main as generate
from vlguard_jax.runtime import auto_dtype


def test_every_template_a_family_renders_is_accepted_and_no_other():
    for template in ("auto", "chat_template", "none", *TEMPLATES, MINIGPTV2_TEMPLATE, "qwen2_5_vl"):
        families.check_template(template)
    with pytest.raises(UsageError, match=r"--template 'vicuna_v2': choose from auto, .*llava_v1"):
        families.check_template("vicuna_v2")


def test_an_image_question_is_asked_in_an_image_familys_template():
    """`vqa --conv-mode`: LLaVA's two, MiniGPT-v2's and Qwen2.5-VL's; not the text-only fallbacks."""
    assert set(families.image_templates()) == {*TEMPLATES, MINIGPTV2_TEMPLATE, "qwen2_5_vl"}


def test_a_mistyped_template_is_refused_before_the_checkpoint_is_read(tmp_path, capsys):
    assert generate(["--checkpoint", str(tmp_path / "absent"), "--prompt", "hi", "--template", "lava_v1"]) == 2
    err = capsys.readouterr().err
    assert "--template 'lava_v1': choose from" in err and "absent" not in err


def test_the_compute_dtypes_hold_every_automatic_choice():
    for backend in ("cpu", "gpu", "cuda", "rocm", "tpu"):
        assert auto_dtype(backend) in flags.COMPUTE_DTYPES
