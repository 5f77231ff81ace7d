"""`trackctl link`: mint a tracking URL exactly as the upstream platform would."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping

from sqlalchemy import select

from shared.db.engine import create_engine
from shared.db.models import TrackingDomain
from shared.domain_status import DomainStatus
from shared.domains import InvalidDomain, normalise_domain
from shared.links import LinkError, LinkSigner
from shared.settings import LINK_KEYS, TRACKING_HOST, DatabaseSettings
from trackctl.settings import reader


async def active_domain(environ: Mapping[str, str], customer_id: str,
                        name: str | None = None) -> str | None:
    """The customer's active tracking domain (the given one, or the newest)."""
    engine = create_engine(DatabaseSettings.read(reader(environ)), pool_size=1)
    try:
        query = (select(TrackingDomain.name)
                 .where(TrackingDomain.customer_id == customer_id,
                        TrackingDomain.status == DomainStatus.ACTIVE)
                 .order_by(TrackingDomain.updated_at.desc()).limit(1))
        if name is not None:
            query = query.where(TrackingDomain.name == name)
        async with engine.connect() as connection:
            return (await connection.execute(query)).scalar_one_or_none()
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    env = reader(environ)
    signer = LinkSigner(env[LINK_KEYS])
    tracking_host = env[TRACKING_HOST]
    if args.domain:
        try:
            host = normalise_domain(args.domain, allow_single_label=True)
        except InvalidDomain as exc:
            print(f"trackctl: --domain: {exc}", file=sys.stderr)
            return 2
        if host != tracking_host and await active_domain(environ, args.customer, host) is None:
            print(f"trackctl: {host} is not an active tracking domain of customer "
                  f"{args.customer}; the redirector would refuse the link", file=sys.stderr)
            return 1
    else:
        host = await active_domain(environ, args.customer) or tracking_host
    if args.port:
        host = f"{host}:{args.port}"
    try:
        url = signer.mint_url(host, customer_id=args.customer, campaign_id=args.campaign,
                              recipient_id=args.recipient, url=args.url, scheme=args.scheme,
                              minted_at=int(time.time()), honeypot=args.honeypot)
    except LinkError as exc:
        print(f"trackctl: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0
