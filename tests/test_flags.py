"""The flags' choices are literals (so --help loads no model code); each equals what the
registries it mirrors say, so a new template or family cannot be missing from them."""

from vlguard_jax import flags
from vlguard_jax.data.conversation import TEMPLATES
from vlguard_jax.data.minigptv2_tokens import TEMPLATE as MINIGPTV2_TEMPLATE
from vlguard_jax.families import FAMILIES
from vlguard_jax.runtime import auto_dtype


def test_the_template_choices_are_every_template_and_family_template():
    image_families = {f.template for f in FAMILIES.values() if f.takes_images and f.template}
    assert set(flags.CONV_MODES) == {"auto", *TEMPLATES, *image_families}
    assert set(flags.TEMPLATE_CHOICES) == {*TEMPLATES, MINIGPTV2_TEMPLATE, *image_families, "chat_template", "none"}


def test_the_compute_dtypes_hold_every_automatic_choice():
    for backend in ("cpu", "gpu", "cuda", "rocm", "tpu"):
        assert auto_dtype(backend) in flags.COMPUTE_DTYPES
