"""Tables. Changing one means a new Alembic revision under migrations/versions/."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from shared.domain_status import INITIAL, TOMBSTONE_STATUS, DomainStatus

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model here maps one Table; SQLAlchemy types `__table__` as any FromClause
    # (a model may map a join), which update()/insert()/delete() do not accept.
    __table__: ClassVar[Table]


class TrackingLog(Base):
    """One row per click served, exactly once (`event_id` is the click event's id).

    On PostgreSQL partitioned by month of `clicked_at` (shared/db/click_partitions.py),
    which every unique constraint must include: a click is one (`event_id`, `clicked_at`),
    and since every delivery of an event carries the event's own time, that is one row
    per event id. Statement triggers keep the click_* aggregates below in step with
    inserts and with changes of `bot`, `bot_reason` or `reasons` (migrations 0007, 0009)."""

    __tablename__ = "tracking_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Text, not UUID: CloudEvents ids are any string, and one odd id must not fail a batch.
    event_id: Mapped[str] = mapped_column(String(256), nullable=False)
    customer_id: Mapped[str] = mapped_column(String(256), nullable=False)
    campaign_id: Mapped[str] = mapped_column(String(256), nullable=False)
    recipient_id: Mapped[str] = mapped_column(String(256), nullable=False)
    domain: Mapped[str] = mapped_column(String(253), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(8), nullable=False, default="GET")
    clicked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    bot: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    bot_reason: Mapped[str | None] = mapped_column(String(100))
    logged_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # Every reason the click looks automated, strongest first, comma-separated
    # (shared/bot_verdict.py); `bot_reason` is the first of them when `bot`.
    reasons: Mapped[str | None] = mapped_column(Text)
    # When the classifier first changed the row (click.classified), else null.
    reclassified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("event_id", "clicked_at"),
        Index(None, "campaign_id", "clicked_at"),
        Index(None, "customer_id", "clicked_at"),
    )


class CampaignDay:
    """The leading key of the click aggregates: a customer's campaign on one UTC day
    (campaign first: reports may leave out the customer)."""

    campaign_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class ClickDaily(CampaignDay, Base):
    """A campaign's clicks of one UTC day on one domain: what campaign reports read.

    Kept by triggers on tracking_logs in the inserting (or reclassifying) transaction.
    `human_recipients` counts the recipients with a human click that day on that domain."""

    __tablename__ = "click_daily"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    clicks: Mapped[int] = mapped_column(BigInteger, nullable=False)
    human_clicks: Mapped[int] = mapped_column(BigInteger, nullable=False)
    human_recipients: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_click: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_click: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClickRecipient(CampaignDay, Base):
    """One recipient's clicks in a campaign on one UTC day and domain: the sets behind
    unique-recipient counts. Partitioned by month of `day` on PostgreSQL, dropped with
    the clicks (CLICK_RETENTION_DAYS)."""

    __tablename__ = "click_recipients"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    clicks: Mapped[int] = mapped_column(Integer, nullable=False)
    human_clicks: Mapped[int] = mapped_column(Integer, nullable=False)


class ClickReason(CampaignDay, Base):
    """A campaign's clicks of one UTC day by reason: `clicks` counts its bot clicks by
    `bot_reason` ('unknown' when none), `bot_clicks` and `human_clicks` its clicks under
    each of their `reasons` (migration 0009)."""

    __tablename__ = "click_reasons"

    reason: Mapped[str] = mapped_column(String(100), primary_key=True)
    clicks: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bot_clicks: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    human_clicks: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class ClickClassification(Base):
    """A `click.classified` whose click is not stored yet: the logger applies it to the
    row once the row exists, then deletes it (services/logger/database.py)."""

    __tablename__ = "click_classifications"

    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    bot: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reasons: Mapped[str | None] = mapped_column(Text)
    clicked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now())


class TrackingDomain(Base):
    """A customer's tracking domain and where it stands in its lifecycle."""

    __tablename__ = "tracking_domains"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Normal form only (shared.domains.normalise_domain): lower-case A-labels, no dot.
    name: Mapped[str] = mapped_column(String(253), unique=True, nullable=False)
    customer_id: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    # A DomainStatus (shared/domain_status.py: what each means, which may follow which).
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=INITIAL)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    matched_by: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The CNAME chain (or address match) the last successful check saw, " -> " joined.
    dns_chain: Mapped[str | None] = mapped_column(Text)
    # When the verifier should look at this domain's DNS next (pending rechecks, and
    # the periodic re-verification of verified/active domains); a tombstone's purge time.
    check_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    certificate_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    certificate_issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    certificate_serial: Mapped[str | None] = mapped_column(String(64))
    # When renewal should start: a third of the lifetime before expiry, jittered.
    certificate_renew_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # shared.domains.registered_domain(name): the unit SURBL/URIBL list and Let's Encrypt
    # counts; indexed to find other customers' domains under the same one.
    registered_domain: Mapped[str | None] = mapped_column(String(253), index=True)
    # Set at verification when another customer's tracking domain or the platform host
    # shares the registered domain (a shared fate on SURBL/URIBL); None otherwise.
    isolation_warning: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in DomainStatus)),
            name="status",
        ),
    )


def tombstone_condition() -> ColumnElement[bool]:
    """`shared.domain_status.is_tombstone` as SQL: a rejected row still holding a
    `check_due_at` (when it may be purged)."""
    return and_(TrackingDomain.status == TOMBSTONE_STATUS,
                TrackingDomain.check_due_at.is_not(None))


class AcmeEvent(Base):
    """What was asked of the ACME CA, kept to stay under its rate limits."""

    __tablename__ = "acme_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # "order" (new order), "certificate" (issued), "failed_validation".
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    registered_domain: Mapped[str] = mapped_column(String(253), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                         server_default=func.now())

    __table_args__ = (
        Index(None, "kind", "at"),
        Index(None, "registered_domain", "kind", "at"),
        Index(None, "name", "kind", "at"),
    )


class DomainReputation(Base):
    """What one DNS blocklist last said about one watched name (a verified or active
    tracking domain, or the platform host), and when the watch asks it next."""

    __tablename__ = "domain_reputation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    # The list's kind (dbl, surbl, uribl) and zone as asked (a Spamhaus DQS key masked).
    blocklist: Mapped[str] = mapped_column(String(16), nullable=False)
    zone: Mapped[str] = mapped_column(String(253), nullable=False)
    # unchecked (no usable answer yet), listed or not_listed: refusals and errors are
    # never verdicts, so they never land here.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="unchecked")
    # The list's categories, comma-separated (spam, phishing, ph, black, ...).
    categories: Mapped[str | None] = mapped_column(Text)
    # The answer as received: the addresses, or NXDOMAIN.
    raw: Mapped[str | None] = mapped_column(Text)
    fix_url: Mapped[str | None] = mapped_column(Text)
    first_listed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_check_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        Index(None, "name", "blocklist", unique=True),
        Index(None, "blocklist", "next_check_at"),
        Index(None, "status"),
        CheckConstraint("status IN ('unchecked', 'listed', 'not_listed')", name="status"),
    )


class DestinationCheck(Base):
    """The destination watch's last verdict on a destination (a registered domain clicked
    links lead to), so a restart does not ask the blocklist again until it is due."""

    __tablename__ = "destination_checks"

    destination: Mapped[str] = mapped_column(String(253), primary_key=True)
    # services/verifier/destinations.py: "listed" or "not_listed" (errors are not stored).
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # The list's categories when listed, comma-joined.
    categories: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DestinationListing(Base):
    """A customer's links led to a listed destination: `destination.listed` was published
    (once per customer, destination and list; the row is what makes it once)."""

    __tablename__ = "destination_listings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(256), nullable=False)
    destination: Mapped[str] = mapped_column(String(253), nullable=False)
    blocklist: Mapped[str] = mapped_column(String(16), nullable=False)
    categories: Mapped[str | None] = mapped_column(Text)
    # The campaign of the click that revealed it.
    campaign_id: Mapped[str] = mapped_column(String(256), nullable=False)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("customer_id", "destination", "blocklist"),
        Index(None, "first_seen_at"),
    )


class StoredCertificate(Base):
    """The certificate store (shared/certificates): each domain's current certificate,
    its private key sealed under CERT_STORE_KEYS. What every edge installs from."""

    __tablename__ = "certificates"

    # Goes with its domain's row when a tombstone is purged.
    name: Mapped[str] = mapped_column(
        String(253), ForeignKey("tracking_domains.name", ondelete="CASCADE"), primary_key=True)
    # The leaf first, then the intermediates (certbot's fullchain.pem).
    chain_pem: Mapped[str] = mapped_column(Text, nullable=False)
    # The private key (PEM), AES-GCM sealed: `key_kid` names the CERT_STORE_KEYS entry.
    key_kid: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    key_sealed: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # The leaf's serial in lower-case hex, as `certificate.issued` carries it.
    serial: Mapped[str] = mapped_column(String(64), nullable=False)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # When this certificate was stored (issued, or restored from certbot's directory).
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The CA's ACME Renewal Information certificate identifier (RFC 9773), when known.
    ari_id: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class AcmeChallenge(Base):
    """An HTTP-01 answer while its order runs: written by the certifier's challenge hook,
    served by every redirector at /.well-known/acme-challenge/<token>."""

    __tablename__ = "acme_challenges"

    token: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    # The key authorization (token "." account key thumbprint): public by design.
    validation: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now())
    # Never served after this, and removed by the next write (a hook that died mid-order).
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 index=True)


class AcmeAccount(Base):
    """The certifier's ACME account per CA directory, sealed under CERT_STORE_KEYS, so a
    certifier with an empty certbot directory carries on with the same account."""

    __tablename__ = "acme_accounts"

    server: Mapped[str] = mapped_column(String(512), primary_key=True)
    # certbot's account id (the directory name under accounts/<server>/directory/).
    account_id: Mapped[str] = mapped_column(String(128), nullable=False)
    kid: Mapped[str] = mapped_column(String(32), nullable=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class EdgeCertificate(Base):
    """What one edge's nginx serves for one domain, written by that edge's agent once a
    handshake showed the serial (`trackctl domain show` lists them)."""

    __tablename__ = "edge_certificates"

    edge_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), primary_key=True, index=True)
    serial: Mapped[str] = mapped_column(String(64), nullable=False)
    installed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now())
    # certificate.installed published for this serial (false: to announce, at least once).
    announced: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
