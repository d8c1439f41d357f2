"""Loading entities by id, scoped to their project: an id from another project is a 404 too."""
from __future__ import annotations

import uuid

from mcc.errors import NotFound
from mcc.extensions import db


def get_scoped(model, entity_id: uuid.UUID, project_id: uuid.UUID | None = None, label: str | None = None):
    entity = db.session.get(model, entity_id)
    if entity is None or (project_id is not None and entity.project_id != project_id):
        raise NotFound(f"{label or model.__name__} not found.", {"id": str(entity_id)})
    return entity
