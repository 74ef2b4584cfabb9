"""A job's request in its record and back (service/jobs/stored.py): what a re-run on any replica needs."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from service.generation.images import ImageInputError
from service.jobs.stored import request_of, stored_request
from service.stores.base import JobRecord
from tests.service.jobs.conftest import image_request


def png(height: int, width: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_a_stored_edit_comes_back_with_its_seed_and_image() -> None:
    source = png(16, 32)
    edit = replace(image_request("e1", n=1, size=None), image=source, strength=0.5)
    record = JobRecord(id="job_1", tenant="alice", epoch="e1", request=stored_request(edit, seed=9))
    again = request_of(record, max_image_side=64)
    assert again.params == edit.params.model_copy(update={"seed": 9})
    assert (again.tenant, again.epoch, again.request_id, again.base_url) == ("alice", "e1", "job_1", edit.base_url)
    assert again.image == source and again.strength == 0.5
    assert again.pixels is not None and again.pixels.shape == (16, 32, 3) and int(again.pixels[0, 0, 0]) == 200


def test_a_stored_image_larger_than_the_model_is_refused_from_its_header() -> None:
    edit = replace(image_request("e1"), image=png(16, 128))
    record = JobRecord(id="job_1", tenant="alice", epoch="e1", request=stored_request(edit, seed=1))
    with pytest.raises(ImageInputError, match="128x16"):
        request_of(record, max_image_side=64)
