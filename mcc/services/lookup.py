"""Loading entities by id, scoped to their project: an id from another project is a 404 too."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select

from mcc.errors import NotFound
from mcc.extensions import db


def get_scoped(model, entity_id: uuid.UUID, project_id: uuid.UUID | None = None, label: str | None = None):
    entity = db.session.get(model, entity_id)
    if entity is None or (project_id is not None and entity.project_id != project_id):
        raise NotFound(f"{label or model.__name__} not found.", {"id": str(entity_id)})
    return entity


def paginate(query, page: int, limit: int, *order_by, scalars: bool = True) -> tuple[list, int]:
    """One page of ``query`` (``order_by`` applied) and the total number of rows it matches."""
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    page_query = query.order_by(*order_by).offset((page - 1) * limit).limit(limit)
    rows = db.session.scalars(page_query) if scalars else db.session.execute(page_query)
    return list(rows.all()), total
