"""Quality enhancement: prompt suffix, default negative prompt and a light post-process.

The negative prompt only acts when cfg > 1 (classifier-free guidance runs); at the Turbo default of
cfg 1.0 it is carried in the metadata but changes nothing.
"""

from __future__ import annotations

from PIL import Image, ImageFilter

from engine.request import DrawRequest, ModelProfile


def enhance_prompts(request: DrawRequest, profile: ModelProfile) -> tuple[str, str]:
    """The positive and negative prompts the model will see."""
    if not request.enhance:
        return request.prompt, request.negative_prompt
    # The prompt enhancer's expansion of the user's words, when it wrote one (bot/core/enhancer.py)
    prompt = f"{request.expanded or request.prompt}, {profile.quality_suffix}"
    negative = request.negative_prompt or profile.negative_prompt
    return prompt, negative


def post_process(image: Image.Image) -> Image.Image:
    """A gentle sharpen, then a wide low-strength unsharp mask for local contrast."""
    sharpened = image.filter(ImageFilter.UnsharpMask(radius=1.2, percent=50, threshold=2))
    return sharpened.filter(ImageFilter.UnsharpMask(radius=24, percent=12, threshold=0))
