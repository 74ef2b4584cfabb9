"""A request is validated once: planning validates it for the backbone's sizes and the engine trusts that; a
request never validated, or validated for other sizes, is validated at submission."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters.errors import AdapterError
from adapters.types import TextualInversion
from service.engine import Engine, EngineError, GenerationRequest
from service.engine.request import max_side, side_supported

PROMPT = "a red circle"


def test_sides_are_multiples_up_to_four_times_the_native_size() -> None:
    assert max_side(16) == 64
    assert [side for side in range(0, 80, 4) if side_supported(side, 16, 8)] == [8, 16, 24, 32, 40, 48, 56, 64]


def test_validate_records_the_sizes_it_passed_for() -> None:
    request = GenerationRequest(PROMPT, seed=0, width=24)
    assert not request.validated(16, 8)
    request.validate(16, 8)
    assert request.validated(16, 8) and not request.validated(32, 8)


def test_a_refused_request_is_not_marked_valid() -> None:
    request = GenerationRequest(PROMPT, seed=0, width=20)
    with pytest.raises(EngineError, match="width 20 is not supported: use a multiple of 8 up to 64"):
        request.validate(16, 8)
    assert not request.validated(16, 8)


def test_a_token_two_embeddings_define_is_refused_at_validation() -> None:
    def embedding(token: str) -> TextualInversion:
        return TextualInversion({token: torch.zeros(1, 32)})

    request = GenerationRequest(PROMPT, seed=0, adapters=((embedding("<x>"), 1.0), (embedding("<x>"), 1.0)))
    with pytest.raises(AdapterError, match="defined by two"):
        request.validate(16, 8)


def test_the_engine_validates_a_request_checked_for_other_sizes(torch_engine: Engine) -> None:
    other = torch_engine.size_multiple // 2  # another backbone's rules, under which an odd multiple of it passes
    request = GenerationRequest(PROMPT, seed=0, width=3 * other)
    request.validate(native_size=1000, multiple=other)
    with pytest.raises(EngineError, match=f"width {3 * other}"):
        torch_engine.submit(request)
    assert torch_engine.load == 0


def test_an_edit_image_must_match_the_size_generated() -> None:
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    with pytest.raises(EngineError, match="init_image is 24x16 but the request generates 16x16"):
        GenerationRequest(PROMPT, seed=0, init_image=image).validate(16, 8)
