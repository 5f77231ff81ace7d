"""Recognising clicks that no person made: flagged with a reason, never dropped.

Mail security gateways fetch every link in a message before the recipient sees
it; counting those as clicks inflates campaign figures, losing them loses the
audit trail. So each click carries `bot` and `bot_reason` and reports choose.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Link scanners and previewers seen on email links, then generic automation.
_SCANNERS = re.compile(
    r"(?P<name>barracuda|proofpoint|mimecast|urldefense|safelinks|trend ?micro|symantec"
    r"|forcepoint|ironport|cisco|fortinet|sophos|bitdefender|kaspersky|zscaler|checkpoint"
    r"|microsoft office|ms-office|outlook-(?:ios|android)|googleimageproxy"
    r"|facebookexternalhit|slackbot|twitterbot|linkedinbot|whatsapp|telegrambot|discordbot"
    r"|skypeuripreview|googlebot|bingbot|yandexbot|applebot|duckduckbot|baiduspider"
    r"|headlesschrome|phantomjs|python-requests|python-urllib|aiohttp|httpx|curl|wget"
    r"|go-http-client|okhttp|java/|libwww-perl|apache-httpclient|node-fetch|axios"
    r"|bot\b|crawler|spider|scanner|preview)",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def classify(method: str, user_agent: str | None) -> str | None:
    """The reason a click looks automated, or None for a person. Cached: agents repeat."""
    if method == "HEAD":
        return "head-request"
    if not user_agent:
        return "no-user-agent"
    match = _SCANNERS.search(user_agent)
    if match:
        return "user-agent:" + match.group("name").lower().rstrip("/")
    return None
