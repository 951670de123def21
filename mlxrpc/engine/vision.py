"""Images for vision-language models: decoding, data: URLs, and prompt inputs.

Pure functions (Pillow, the Hugging Face processor, numpy); fetching remote
images happens at the service edge (mlxrpc/service/images.py).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from .errors import invalid
from .prompts import render_chat
from .types import ChatPrompt


def decode_data_url(url: str, max_bytes: int, field: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or ";base64" not in header:
        raise invalid(field, f"{field}: only data:image/...;base64 URLs are accepted")
    if len(payload) * 3 // 4 > max_bytes:
        raise invalid(field, f"{field}: the image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(field, f"{field}: invalid base64 data ({exc})") from None


def open_image(data: bytes, field: str) -> Any:
    """A decoded RGB PIL image; INVALID_ARGUMENT naming the image if it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise invalid(field, f"{field} is not a decodable image: {exc}") from None
    return image.convert("RGB")


def decode_images(prompt: ChatPrompt, max_pixels: int) -> list[Any]:
    """The prompt's images decoded, refusing undecodable or oversized ones."""
    images = [open_image(img.data, f"images[{i}]") for i, img in enumerate(prompt.images)]
    for i, image in enumerate(images):
        if image.width * image.height > max_pixels:
            raise invalid(f"images[{i}]", f"images[{i}] has more than {max_pixels} pixels")
    return images


def vision_inputs(processor: Any, tokenizer: Any, prompt: ChatPrompt,
                  images: list[Any]) -> tuple[list[int], str, dict[str, np.ndarray]]:
    """(token ids, prompt text, numpy model inputs such as pixel_values).

    Runs on the engine thread: mlx-vlm's processors touch MLX.
    """
    from mlx_vlm.utils import prepare_inputs

    text = render_chat(tokenizer, prompt)
    inputs = prepare_inputs(processor, images=images or None, prompts=[text], return_tensors="np",
                            add_special_tokens=False)
    arrays = {k: np.asarray(v) for k, v in inputs.items() if v is not None and k != "input_ids"}
    ids = np.asarray(inputs["input_ids"]).reshape(-1).tolist()
    return ids, text, arrays
