"""SQLAlchemy models, one module per aggregate. Import them all so Alembic sees every table."""
from mcc.models.auth import RefreshToken, RevokedToken, User  # noqa: F401
from mcc.models.project import Project  # noqa: F401
from mcc.models.agent import Agent  # noqa: F401
from mcc.models.github import Issue  # noqa: F401
from mcc.models.conversation import Conversation, Message, conversation_agents  # noqa: F401
from mcc.models.turn import LedgerEntry, Turn  # noqa: F401
from mcc.models.control import EmergencyEvent, Notification, notification_reads  # noqa: F401
from mcc.models.budget import BudgetAlert, BudgetLimit, CostDaily  # noqa: F401
from mcc.models.task import Task, TaskTransition  # noqa: F401
from mcc.models.audit import AuditEvent  # noqa: F401
