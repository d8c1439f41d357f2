"""SQLAlchemy models, one module per aggregate. Import them all so Alembic sees every table."""
from mcc.models.auth import RefreshToken, RevokedToken, User  # noqa: F401
